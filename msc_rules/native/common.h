// Shared by the native walks of msc_rules (rebuild.cc, read.cc): type indices by type
// key, reflected fields by name, and a hash map keyed by node address. Built against
// tvm-ffi's headers only (the apache-tvm wheel ships no relax headers).

#ifndef MSC_RULES_NATIVE_COMMON_H_
#define MSC_RULES_NATIVE_COMMON_H_

#include <tvm/ffi/any.h>
#include <tvm/ffi/cast.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/object.h>
#include <tvm/ffi/reflection/accessor.h>
#include <tvm/ffi/string.h>

#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

namespace msc_rules {

namespace ffi = tvm::ffi;
using ffi::Any;
using ffi::AnyView;
using ffi::Array;
using ffi::Function;
using ffi::Object;
using ffi::ObjectRef;

inline int32_t TypeIndex(const char* key) {
  int32_t index = -1;
  TVMFFIByteArray arr = {key, std::strlen(key)};
  if (TVMFFITypeKeyToIndex(&arr, &index) != 0) {
    TVMFFIErrorSetRaisedFromCStr("RuntimeError", key);  // clears the pending error
    return -1;
  }
  return index;
}

// The reflection record of field `name` of `type_key` or of one of its ancestors
// (GetFieldInfo looks at the type's own fields only: VarBinding's `var` is Binding's).
inline const TVMFFIFieldInfo* FindField(const char* type_key, const char* name) {
  int32_t index = TypeIndex(type_key);
  if (index < 0) TVM_FFI_THROW(RuntimeError) << "type " << type_key << " is not registered";
  const TVMFFITypeInfo* info = TVMFFIGetTypeInfo(index);
  size_t len = std::strlen(name);
  while (info != nullptr) {
    for (int32_t i = 0; i < info->num_fields; ++i) {
      const TVMFFIFieldInfo& f = info->fields[i];
      if (f.name.size == len && std::strncmp(f.name.data, name, len) == 0) return &f;
    }
    info = info->type_depth > 0 ? info->type_ancestors[info->type_depth - 1] : nullptr;
  }
  TVM_FFI_THROW(RuntimeError) << "no field " << name << " in " << type_key;
  TVM_FFI_UNREACHABLE();
}

// One reflected field: read straight from its offset when it holds an object
// reference (8 bytes, an object type), else through its getter; written with its setter.
struct Field {
  const TVMFFIFieldInfo* info = nullptr;
  bool direct = false;

  Field() = default;
  Field(const char* type_key, const char* name, bool object = true)
      : info(FindField(type_key, name)),
        direct(info->size == sizeof(void*) &&
               info->field_static_type_index >= ffi::TypeIndex::kTVMFFIStaticObjectBegin) {
    if (object && !direct) {
      TVM_FFI_THROW(RuntimeError) << "field " << name << " of " << type_key
                                  << " does not hold an object reference";
    }
  }

  // The field as an object reference, without touching its reference count (only for
  // fields that hold one: checked when the field is looked up with `object = true`).
  const ObjectRef& Get(const Object* obj) const {
    return *reinterpret_cast<const ObjectRef*>(reinterpret_cast<const char*>(obj) +
                                               info->offset);
  }

  Array<ObjectRef> GetArray(const Object* obj) const {
    return Any(Get(obj)).cast<Array<ObjectRef>>();
  }

  // The field as an int64: read straight from its offset when it holds one (an IntImm's
  // value), else through its getter.
  int64_t GetInt64(const Object* obj) const {
    if (info->size == sizeof(int64_t) &&
        info->field_static_type_index == ffi::TypeIndex::kTVMFFIInt) {
      int64_t v;
      std::memcpy(&v, reinterpret_cast<const char*>(obj) + info->offset, sizeof(v));
      return v;
    }
    return GetAny(obj).cast<int64_t>();
  }

  Any GetAny(const Object* obj) const {
    const char* addr = reinterpret_cast<const char*>(obj) + info->offset;
    Any out;
    TVM_FFI_CHECK_SAFE_CALL(
        info->getter(const_cast<char*>(addr), reinterpret_cast<TVMFFIAny*>(&out)));
    return out;
  }

  // The field of a fresh copy of ours set to `value`, written in place for a field that
  // holds an object reference (the walks only set such a field to a node of the type it
  // held), else through the setter.
  void SetRef(const Object* obj, ObjectRef value) const {
    if (!direct) {
      Set(obj, value);
      return;
    }
    char* addr = const_cast<char*>(reinterpret_cast<const char*>(obj)) + info->offset;
    *reinterpret_cast<ObjectRef*>(addr) = std::move(value);
  }

  void Set(const Object* obj, AnyView value) const {
    // only on a fresh copy of ours: see Types::Copy
    char* addr = const_cast<char*>(reinterpret_cast<const char*>(obj)) + info->offset;
    TVM_FFI_CHECK_SAFE_CALL(ffi::reflection::CallFieldSetter(
        info, addr, reinterpret_cast<const TVMFFIAny*>(&value)));
  }
};

// Whether type `index` is `base` or derives from it (Python's isinstance).
inline bool DerivesFrom(int32_t index, int32_t base) {
  if (index == base) return true;
  if (base < 0) return false;
  const TVMFFITypeInfo* info = TVMFFIGetTypeInfo(index);
  const TVMFFITypeInfo* base_info = TVMFFIGetTypeInfo(base);
  if (info == nullptr || base_info == nullptr) return false;
  int32_t depth = base_info->type_depth;
  return depth < info->type_depth && info->type_ancestors[depth]->type_index == base;
}

// An open-addressing hash map keyed by node address: one allocation for the whole
// table instead of one per entry (std::unordered_map's), which the rebuild did per
// binding several times.
template <typename V>
class PtrMap {
 public:
  explicit PtrMap(size_t expected = 0) { Reset(expected * 2 + 16); }

  size_t size() const { return size_; }

  const V* Find(const Object* key) const {
    for (size_t i = Slot(key);; i = (i + 1) & mask_) {
      if (keys_[i] == key) return &values_[i];
      if (keys_[i] == nullptr) return nullptr;
    }
  }

  // The value of `key`, inserted (default-made) if absent; `fresh` says which. (One
  // probe where Find then Put take two.)
  V* Insert(const Object* key, bool* fresh) {
    if ((size_ + 1) * 2 > keys_.size()) Grow();
    for (size_t i = Slot(key);; i = (i + 1) & mask_) {
      if (keys_[i] == key) {
        *fresh = false;
        return &values_[i];
      }
      if (keys_[i] == nullptr) {
        keys_[i] = key;
        ++size_;
        *fresh = true;
        return &values_[i];
      }
    }
  }

  void Put(const Object* key, V value) {
    if ((size_ + 1) * 2 > keys_.size()) Grow();
    for (size_t i = Slot(key);; i = (i + 1) & mask_) {
      if (keys_[i] == key) {
        values_[i] = std::move(value);
        return;
      }
      if (keys_[i] == nullptr) {
        keys_[i] = key;
        values_[i] = std::move(value);
        ++size_;
        return;
      }
    }
  }

 private:
  size_t Slot(const Object* key) const {
    uint64_t h = (reinterpret_cast<uint64_t>(key) >> 4) * 0x9E3779B97F4A7C15ull;
    return static_cast<size_t>(h >> 20) & mask_;
  }

  void Reset(size_t capacity) {
    size_t cap = 16;
    while (cap < capacity) cap <<= 1;
    keys_.assign(cap, nullptr);
    values_.clear();
    values_.resize(cap);
    mask_ = cap - 1;
    size_ = 0;
  }

  void Grow() {
    std::vector<const Object*> keys = std::move(keys_);
    std::vector<V> values = std::move(values_);
    Reset(keys.size() * 2);
    for (size_t i = 0; i < keys.size(); ++i) {
      if (keys[i] != nullptr) Put(keys[i], std::move(values[i]));
    }
  }

  std::vector<const Object*> keys_;
  std::vector<V> values_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

// Type indices and fields of the Relax nodes both walks follow, resolved by type key
// and field name (the walks' own type structs add theirs).
struct RelaxNodes {
  int32_t var, dataflow_var, call, constant, tuple, item, seq, if_, function, shape;
  int32_t var_binding, match_cast;
  Field call_op, call_args, tuple_fields, item_tuple, seq_blocks, seq_body, if_cond, if_true,
      if_false, func_params, func_body, block_bindings, binding_var, binding_value,
      match_cast_value;

  RelaxNodes()
      : var(TypeIndex("ir.Var")),
        dataflow_var(TypeIndex("relax.expr.DataflowVar")),
        call(TypeIndex("ir.Call")),
        constant(TypeIndex("ir.GenericConst")),
        tuple(TypeIndex("ir.Tuple")),
        item(TypeIndex("ir.TupleGetItem")),
        seq(TypeIndex("relax.expr.SeqExpr")),
        if_(TypeIndex("relax.expr.If")),
        function(TypeIndex("relax.expr.Function")),
        shape(TypeIndex("relax.expr.ShapeExpr")),
        var_binding(TypeIndex("relax.expr.VarBinding")),
        match_cast(TypeIndex("relax.expr.MatchCast")),
        call_op("ir.Call", "op"),
        call_args("ir.Call", "args"),
        tuple_fields("ir.Tuple", "fields"),
        item_tuple("ir.TupleGetItem", "tuple_value"),
        seq_blocks("relax.expr.SeqExpr", "blocks"),
        seq_body("relax.expr.SeqExpr", "body"),
        if_cond("relax.expr.If", "cond"),
        if_true("relax.expr.If", "true_branch"),
        if_false("relax.expr.If", "false_branch"),
        func_params("relax.expr.Function", "params"),
        func_body("relax.expr.Function", "body"),
        block_bindings("relax.expr.BindingBlock", "bindings"),
        binding_var("relax.expr.VarBinding", "var"),
        binding_value("relax.expr.VarBinding", "value"),
        match_cast_value("relax.expr.MatchCast", "value") {
    for (int32_t index : {var, dataflow_var, call, constant, tuple, item, seq, if_, function,
                          shape, var_binding, match_cast}) {
      if (index < 0) TVM_FFI_THROW(RuntimeError) << "a Relax node type is not registered";
    }
  }
};

// What a walk over a block's bindings reads of each VarBinding beyond its var and value,
// for PrefetchBindings: a field of the var (its type, or its span), a field of a bound
// call besides its arguments array (its op, its span), and whether to fetch the call's
// argument nodes too.
struct Lookahead {
  const Field* var_field = nullptr;
  const Field* call_field = nullptr;
  bool arg_nodes = false;
};

// Asks for the nodes the walk reads of the bindings after binding i of `arr` (a module's
// nodes are cold and scattered: each read would wait for memory in turn), each a few
// bindings ahead of its use so that it arrives in time: binding i + 8; the var and value
// of i + 4; of i + 2 what `what` names of the var and the call, and the call's arguments
// array; of i + 1 the call's argument nodes if `what` asks for them.
inline void PrefetchBindings(const RelaxNodes& t, const Lookahead& what,
                             const ffi::ArrayObj* arr, int64_t i) {
  int64_t n = static_cast<int64_t>(arr->size());
  auto var_binding = [&](int64_t at) -> const Object* {
    if (at >= n) return nullptr;
    const Object* b = (*arr)[at].as<Object>();
    return b != nullptr && b->type_index() == t.var_binding ? b : nullptr;
  };
  auto call = [&](const Object* b) -> const Object* {
    const Object* value = t.binding_value.Get(b).get();
    return value != nullptr && value->type_index() == t.call ? value : nullptr;
  };
  if (i + 8 < n) __builtin_prefetch((*arr)[i + 8].as<Object>());
  if (const Object* b = var_binding(i + 4)) {
    __builtin_prefetch(t.binding_var.Get(b).get());
    __builtin_prefetch(t.binding_value.Get(b).get());
  }
  if (const Object* b = var_binding(i + 2)) {
    const Object* var = t.binding_var.Get(b).get();
    if (var != nullptr && what.var_field != nullptr) {
      __builtin_prefetch(what.var_field->Get(var).get());
    }
    if (const Object* c = call(b)) {
      __builtin_prefetch(t.call_args.Get(c).get());
      if (what.call_field != nullptr) __builtin_prefetch(what.call_field->Get(c).get());
    }
  }
  if (!what.arg_nodes) return;
  if (const Object* b = var_binding(i + 1)) {
    const Object* c = call(b);
    const Object* args = c == nullptr ? nullptr : t.call_args.Get(c).get();
    if (args != nullptr && args->type_index() == ffi::TypeIndex::kTVMFFIArray) {
      for (const Any& a : *static_cast<const ffi::ArrayObj*>(args)) {
        __builtin_prefetch(a.as<Object>());
      }
    }
  }
}

// Nesting levels before the read or the rebuild hands a function to Python (a C++ stack
// is smaller than what Python allows).
constexpr int kMaxFunctionDepth = 2000;

// Counts the nesting of a recursive walk: past `limit` levels it raises, and the caller
// hands the function to Python (a C++ stack is smaller than what Python allows).
class DepthGuard {
 public:
  DepthGuard(int* depth, int limit) : depth_(depth) {
    if (++*depth_ > limit) {
      --*depth_;
      TVM_FFI_THROW(RuntimeError) << "module nests too deeply";
    }
  }
  ~DepthGuard() { --*depth_; }
  DepthGuard(const DepthGuard&) = delete;
  DepthGuard& operator=(const DepthGuard&) = delete;

 private:
  int* depth_;
};

// The words of an input given as a compact int64 array on the CPU (numpy's, shared
// through DLPack: no copy on the way in); `what` names it in the error.
inline const int64_t* Int64Words(const ffi::Tensor& t, int64_t* n, const char* what) {
  const DLTensor* d = t.GetDLTensorPtr();
  if (d->device.device_type != kDLCPU || d->dtype.code != kDLInt || d->dtype.bits != 64 ||
      d->dtype.lanes != 1) {
    TVM_FFI_THROW(ValueError) << what << " is not an int64 array on the CPU";
  }
  int64_t size = 1;
  for (int32_t k = d->ndim - 1; k >= 0; --k) {
    if (d->strides != nullptr && d->shape[k] > 1 && d->strides[k] != size) {
      TVM_FFI_THROW(ValueError) << what << " is not compact";
    }
    size *= d->shape[k];
  }
  *n = size;
  return reinterpret_cast<const int64_t*>(static_cast<const char*>(d->data) + d->byte_offset);
}

// A vector's contents as bytes (the flat arrays a walk returns to Python).
template <typename T>
ffi::Bytes ToBytes(const std::vector<T>& v) {
  return ffi::Bytes(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

}  // namespace msc_rules

#endif  // MSC_RULES_NATIVE_COMMON_H_
