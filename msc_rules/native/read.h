// The native read (read.cc) as another walk calls it: naming.cc's combined walk has the
// read hand it each binding of the entry function, so that one pass over the module's
// nodes serves both (the second of two separate walks met every node cold again).

#ifndef MSC_RULES_NATIVE_READ_H_
#define MSC_RULES_NATIVE_READ_H_

#include <cstdint>

#include "common.h"

namespace msc_rules {

// A walk that goes along with a read, binding by binding.
class BindingHook {
 public:
  // Called with each binding of the read function's top-level blocks, in order, right
  // after the read's own work on it. What it throws ends the read.
  virtual void Binding(const ObjectRef& binding) = 0;

 protected:
  ~BindingHook() = default;
};

// Read global function `func` named `name`: values numbered from `first_value`, leaves
// from `first_leaf`, flat arguments, attributes entries and static shapes from
// `flat_base`, `attrs_base`, `shape_base`; `const_keys` (int64 handles) and `const_ids`
// (int32 value ids) are the constants earlier functions of the view met; `global_keys`
// (int64 handles) and `global_relax` (int32, 1 or 0) the module's global vars and whether
// each names a Relax function; `hook` (or null) goes along (see BindingHook). Returns the
// read's arrays (read.cc's header comment); raises on what it does not handle.
Array<Any> ReadFunction(ObjectRef func, ffi::String name, int64_t first_value,
                        int64_t first_leaf, int64_t flat_base, int64_t attrs_base,
                        int64_t shape_base, ffi::Bytes const_keys, ffi::Bytes const_ids,
                        ffi::Bytes global_keys, ffi::Bytes global_relax, BindingHook* hook);

}  // namespace msc_rules

#endif  // MSC_RULES_NATIVE_READ_H_
