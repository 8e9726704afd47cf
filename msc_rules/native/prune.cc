// The native rebuild of a prune: one walk over the binding blocks of a Relax function
// body that gives the bindings the prune changed their new types.
//
// It mirrors msc_rules/prune_rebuild.py (the Python rebuild) node for node: a binding
// var whose leaf lost channels gets a new tensor type (its old one with the pruned
// extents), the call computing it gets that type too, vars are remapped, sliced
// constants swapped in, a reshape's or broadcast_to's shape argument gets the new
// extents, and calls with new attributes (conv groups, split indices) get them. No
// type inference and no normalisation; spans are kept. Anything it does not handle
// (a match_cast, a nested call, a local function, If) raises, and the caller uses the
// Python rebuild instead: never a silently wrong result.

#include <tvm/ffi/any.h>
#include <tvm/ffi/cast.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/object.h>
#include <tvm/ffi/reflection/accessor.h>
#include <tvm/ffi/string.h>

#include "common.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

using namespace msc_rules;  // NOLINT(build/namespaces): this file's own helpers

struct PruneTypes : RelaxNodes {
  int32_t block, dataflow_block, tensor_type, int_imm;
  Field expr_ty, call_attrs, tensor_shape, tensor_dtype, tensor_vdevice, shape_values,
      int_value, item_index, expr_span, const_value;
  Function make_tensor_type, make_shape, make_int, make_tuple, make_item;
  ffi::reflection::TypeAttrColumn copy_column{ffi::reflection::type_attr::kShallowCopy};

  PruneTypes() {
    block = TypeIndex("relax.expr.BindingBlock");
    dataflow_block = TypeIndex("relax.expr.DataflowBlock");
    tensor_type = TypeIndex("relax.TensorType");
    int_imm = TypeIndex("ir.IntImm");
    for (int32_t index : {block, dataflow_block, tensor_type, int_imm}) {
      if (index < 0) TVM_FFI_THROW(RuntimeError) << "a Relax node type is not registered";
    }
    expr_ty = Field("ir.Expr", "ty");
    expr_span = Field("ir.Expr", "span");
    call_attrs = Field("ir.Call", "attrs");
    tensor_shape = Field("relax.TensorType", "shape", false);
    tensor_dtype = Field("relax.TensorType", "dtype", false);
    tensor_vdevice = Field("relax.TensorType", "vdevice", false);
    shape_values = Field("relax.expr.ShapeExpr", "values");
    int_value = Field("ir.IntImm", "value", false);
    item_index = Field("ir.TupleGetItem", "index", false);
    const_value = Field("ir.GenericConst", "value", false);
    make_tensor_type = Function::GetGlobalRequired("relax.TensorType");
    make_shape = Function::GetGlobalRequired("relax.ShapeExpr");
    make_int = Function::GetGlobalRequired("ir.IntImm");
    make_tuple = Function::GetGlobalRequired("ir.Tuple");
    make_item = Function::GetGlobalRequired("ir.TupleGetItem");
  }

  // A fresh copy of `node` whose fields may be set (it is ours alone).
  ObjectRef Copy(const ObjectRef& node) const {
    AnyView fn = copy_column[node->type_index()];
    if (fn.type_index() != ffi::TypeIndex::kTVMFFIFunction) {
      TVM_FFI_THROW(RuntimeError) << "no __ffi_shallow_copy__ for " << node->GetTypeKey();
    }
    return fn.cast<Function>()(node).cast<ObjectRef>();
  }
};

const PruneTypes& GetPruneTypes() {
  static PruneTypes types;  // thread-safe initialisation (C++11)
  return types;
}

// The new extents of one binding var or constant: (axis, extent) pairs, and the id of
// its old static shape in the view (-1: none given).
struct Cut {
  const int64_t* pairs = nullptr;
  int64_t n = 0;
  int64_t shape = -1;
};

// Raw bits of an Any, for a memo key (an object by address, a POD by value).
void AnyBits(const Any& a, std::vector<int64_t>* key) {
  TVMFFIAny raw;
  std::memcpy(&raw, &a, sizeof(raw));
  int64_t word;
  std::memcpy(&word, &raw.v_int64, sizeof(word));
  key->push_back(raw.type_index);
  key->push_back(word);
}

// A hash of int64 words (the memo keys of new types).
struct WordsHash {
  size_t operator()(const std::vector<int64_t>& words) const {
    uint64_t h = 0x9E3779B97F4A7C15ull;
    for (int64_t w : words) h = (h ^ static_cast<uint64_t>(w)) * 0x100000001B3ull;
    return static_cast<size_t>(h ^ (h >> 29));
  }
};

class PruneRebuilder {
 public:
  PruneRebuilder(const PruneTypes& t, const PtrMap<Cut>& cuts, const PtrMap<ObjectRef>& typed,
                 const PtrMap<ObjectRef>& consts, const PtrMap<ObjectRef>& attrs,
                 const Array<ObjectRef>& shape_ops)
      : t_(t), cuts_(cuts), typed_(typed), consts_(consts), attrs_(attrs),
        shape_ops_(shape_ops), remap_(cuts.size() + consts.size()) {}

  ObjectRef Seq(const ObjectRef& seq) {
    if (seq->type_index() != t_.seq) {
      TVM_FFI_THROW(TypeError) << "expected a SeqExpr, got " << seq->GetTypeKey();
    }
    Array<ObjectRef> old_blocks = t_.seq_blocks.GetArray(seq.get());
    Array<ObjectRef> blocks;
    blocks.reserve(old_blocks.size());
    for (const ObjectRef& block : old_blocks) {
      int32_t bti = block->type_index();
      if (bti != t_.block && bti != t_.dataflow_block) {
        TVM_FFI_THROW(RuntimeError) << "the prune rebuild does not handle "
                                    << block->GetTypeKey();
      }
      Array<ObjectRef> old_bindings = t_.block_bindings.GetArray(block.get());
      Array<ObjectRef> bindings;
      bindings.reserve(old_bindings.size());
      bool changed = false;
      const ffi::ArrayObj* arr = old_bindings.as<ffi::ArrayObj>();
      int64_t n_bindings = static_cast<int64_t>(old_bindings.size());
      for (int64_t i = 0; i < n_bindings; ++i) {
        PrefetchBindings(t_, Lookahead{&t_.expr_ty}, arr, i);
        const ObjectRef& b = old_bindings[i];
        ObjectRef nb = Binding(b);
        changed = changed || !nb.same_as(b);
        bindings.push_back(std::move(nb));
      }
      if (!changed) {
        blocks.push_back(block);
        continue;
      }
      ObjectRef out = t_.Copy(block);
      t_.block_bindings.SetRef(out.get(), bindings);
      blocks.push_back(out);
    }
    ObjectRef old_body = t_.seq_body.Get(seq.get());
    ObjectRef body = Arg(old_body);
    ObjectRef out = t_.Copy(seq);
    t_.seq_blocks.SetRef(out.get(), blocks);
    t_.seq_body.SetRef(out.get(), body);
    // (as prune_rebuild.py: the new seq has its body's type)
    t_.expr_ty.SetRef(out.get(), t_.expr_ty.Get(body.get()));
    return out;
  }

 private:
  // An argument or bound value with vars remapped and constants replaced.
  ObjectRef Arg(const ObjectRef& a) {
    if (!a.defined()) return a;
    int32_t ti = a->type_index();
    if (ti == t_.var || ti == t_.dataflow_var) {
      const ObjectRef* got = remap_.Find(a.get());
      return got == nullptr ? a : *got;
    }
    if (ti == t_.constant) return Constant(a);
    if (ti == t_.tuple) {
      Array<ObjectRef> old = t_.tuple_fields.GetArray(a.get());
      Array<ObjectRef> fields;
      fields.reserve(old.size());
      bool changed = false;
      for (const ObjectRef& f : old) {
        ObjectRef n = Arg(f);
        changed = changed || !n.same_as(f);
        fields.push_back(std::move(n));
      }
      if (!changed) return a;
      // (the constructor gives the tuple its fields' types)
      return t_.make_tuple(fields, t_.expr_span.GetAny(a.get())).cast<ObjectRef>();
    }
    if (ti == t_.item) {
      ObjectRef old = t_.item_tuple.Get(a.get());
      ObjectRef tv = Arg(old);
      if (tv.same_as(old)) return a;
      return t_.make_item(tv, t_.item_index.GetAny(a.get()), t_.expr_span.GetAny(a.get()))
          .cast<ObjectRef>();
    }
    if (ti == t_.call || ti == t_.if_ || ti == t_.seq || ti == t_.function ||
        ti == t_.match_cast) {
      TVM_FFI_THROW(RuntimeError) << "the prune rebuild does not handle a nested "
                                  << a->GetTypeKey();
    }
    if (DerivesFrom(ti, t_.var)) {  // another var class
      const ObjectRef* got = remap_.Find(a.get());
      return got == nullptr ? a : *got;
    }
    return a;  // shapes, prim values, strings, globals: nothing to rebuild
  }

  // a sliced constant: its new data, and its type with the cut's extents (made once)
  ObjectRef Constant(const ObjectRef& c) {
    const ObjectRef* data = consts_.Find(c.get());
    if (data == nullptr) return c;
    const ObjectRef* done = remap_.Find(c.get());
    if (done != nullptr) return *done;
    ObjectRef out = t_.Copy(c);
    t_.const_value.Set(out.get(), *data);
    const Cut* cut = cuts_.Find(c.get());
    if (cut != nullptr) t_.expr_ty.SetRef(out.get(), Retype(t_.expr_ty.Get(c.get()), *cut));
    remap_.Put(c.get(), out);
    return out;
  }

  ObjectRef Int(int64_t v) {
    auto it = ints_.find(v);
    if (it != ints_.end()) return it->second;
    ObjectRef out = t_.make_int(ffi::String("int64"), v, nullptr).cast<ObjectRef>();
    ints_.emplace(v, out);
    return out;
  }

  // `values` with the cut's extents
  Array<ObjectRef> CutValues(const Array<ObjectRef>& values, const Cut& cut) {
    std::vector<ObjectRef> vals(values.begin(), values.end());
    for (int64_t k = 0; k < cut.n; ++k) {
      int64_t axis = cut.pairs[2 * k];
      if (axis < 0 || axis >= static_cast<int64_t>(vals.size())) {
        TVM_FFI_THROW(ValueError) << "a pruned axis out of range";
      }
      vals[axis] = Int(cut.pairs[2 * k + 1]);
    }
    return Array<ObjectRef>(vals.begin(), vals.end());
  }

  // The type `ty` with the cut's extents (made once per old type and cut, as Retyper):
  // memoised by the static shape's id the view gave the tensor when the cut has one
  // (the old type's shape and dims, cold nodes each, are then read once per id), else
  // by its dims.
  ObjectRef Retype(const ObjectRef& ty, const Cut& cut) {
    if (!ty.defined() || ty->type_index() != t_.tensor_type) return ty;
    Any dtype = t_.tensor_dtype.GetAny(ty.get());
    Any vdevice = t_.tensor_vdevice.GetAny(ty.get());
    if (cut.shape < 0) return RetypeDims(ty, cut, dtype, vdevice);
    std::vector<int64_t>& key = static_key_;
    key.clear();
    key.push_back(-1);  // (apart from the keys of dims, which start with a dtype code)
    key.push_back(cut.shape);
    AnyBits(dtype, &key);
    AnyBits(vdevice, &key);
    key.insert(key.end(), cut.pairs, cut.pairs + 2 * cut.n);
    auto it = types_.find(key);
    if (it != types_.end()) return it->second;
    ObjectRef out = RetypeDims(ty, cut, dtype, vdevice);
    types_.emplace(key, out);
    return out;
  }

  ObjectRef RetypeDims(const ObjectRef& ty, const Cut& cut, const Any& dtype,
                       const Any& vdevice) {
    auto shape = t_.tensor_shape.GetAny(ty.get()).cast<ffi::Optional<ObjectRef>>();
    if (!shape.has_value() || (*shape)->type_index() != t_.shape) return ty;
    const ffi::ArrayObj* values = t_.shape_values.Get(shape.value().get()).as<ffi::ArrayObj>();
    if (values == nullptr) return ty;
    // (one key buffer for the whole walk: a lookup that hits allocates nothing)
    std::vector<int64_t>& key = key_;
    key.clear();
    AnyBits(dtype, &key);
    AnyBits(vdevice, &key);
    for (size_t i = 0; i < values->size(); ++i) {
      const Object* d = (*values)[static_cast<int64_t>(i)].as<Object>();
      if (d != nullptr && d->type_index() == t_.int_imm) {
        key.push_back(0);
        key.push_back(t_.int_value.GetInt64(d));
      } else {
        key.push_back(1);
        key.push_back(reinterpret_cast<int64_t>(d));
      }
    }
    key.insert(key.end(), cut.pairs, cut.pairs + 2 * cut.n);
    auto it = types_.find(key);
    if (it != types_.end()) return it->second;
    Array<ObjectRef> dims = t_.shape_values.GetArray(shape.value().get());
    ObjectRef new_shape = t_.make_shape(CutValues(dims, cut), nullptr).cast<ObjectRef>();
    ObjectRef out = t_.make_tensor_type(new_shape, dtype, -1, vdevice, nullptr)
                        .cast<ObjectRef>();
    // (holds the old type: its dims' addresses are in the key)
    held_.push_back(ty);
    types_.emplace(key, out);
    return out;
  }

  bool IsShapeOp(const ObjectRef& op) const {
    for (const ObjectRef& s : shape_ops_) {
      if (op.same_as(s)) return true;
    }
    return false;
  }

  ObjectRef Binding(const ObjectRef& b) {
    if (b->type_index() != t_.var_binding) {
      TVM_FFI_THROW(RuntimeError) << "the prune rebuild does not handle " << b->GetTypeKey();
    }
    const ObjectRef& var = t_.binding_var.Get(b.get());
    const ObjectRef& value = t_.binding_value.Get(b.get());
    const Cut* cut = cuts_.Find(var.get());
    const ObjectRef* given = typed_.Find(var.get());
    const ObjectRef& old_ty = t_.expr_ty.Get(var.get());
    ObjectRef ty = old_ty;
    if (given != nullptr) {
      ty = *given;
    } else if (cut != nullptr) {
      ty = Retype(old_ty, *cut);
    }
    bool retyped = !ty.same_as(old_ty);
    ObjectRef new_value;
    if (value.defined() && value->type_index() == t_.call) {
      Array<ObjectRef> old_args = t_.call_args.GetArray(value.get());
      Array<ObjectRef> args;
      args.reserve(old_args.size());
      bool changed = false;
      for (const ObjectRef& a : old_args) {
        ObjectRef n = Arg(a);
        changed = changed || !n.same_as(a);
        args.push_back(std::move(n));
      }
      const ObjectRef* attrs = attrs_.Find(value.get());
      if (!changed && !retyped && attrs == nullptr) return b;
      new_value = t_.Copy(value);
      if (retyped && cut != nullptr && args.size() >= 2 && IsShapeOp(t_.call_op.Get(value.get()))) {
        // a reshape's or broadcast_to's shape argument is its output's new shape
        const ObjectRef& shape = args[1];
        if (shape.defined() && shape->type_index() == t_.shape) {
          ObjectRef new_shape = t_.make_shape(
              CutValues(t_.shape_values.GetArray(shape.get()), *cut),
              t_.expr_span.GetAny(shape.get())).cast<ObjectRef>();
          args.Set(1, new_shape);
        }
      }
      t_.call_args.SetRef(new_value.get(), args);
      if (attrs != nullptr) t_.call_attrs.SetRef(new_value.get(), *attrs);
      t_.expr_ty.SetRef(new_value.get(), ty);
    } else {
      new_value = Arg(value);
      if (!retyped && new_value.same_as(value)) return b;
    }
    ObjectRef new_var = var;
    if (retyped) {
      new_var = t_.Copy(var);
      t_.expr_ty.SetRef(new_var.get(), ty);
      remap_.Put(var.get(), new_var);
    }
    ObjectRef out = t_.Copy(b);
    t_.binding_var.SetRef(out.get(), new_var);
    t_.binding_value.SetRef(out.get(), new_value);
    return out;
  }

  const PruneTypes& t_;
  const PtrMap<Cut>& cuts_;
  const PtrMap<ObjectRef>& typed_;
  const PtrMap<ObjectRef>& consts_;
  const PtrMap<ObjectRef>& attrs_;
  const Array<ObjectRef>& shape_ops_;
  PtrMap<ObjectRef> remap_;
  std::unordered_map<std::vector<int64_t>, ObjectRef, WordsHash> types_;
  std::vector<int64_t> key_, static_key_;
  std::map<int64_t, ObjectRef> ints_;
  std::vector<ObjectRef> held_;
};

// The data of sliced constants, allocated here (64-byte aligned, as TVM wants it) and
// freed by this library's deleter (the library stays loaded while the process runs).
struct AlignedAlloc {
  void AllocData(DLTensor* tensor) {
    size_t size = (ffi::GetDataSize(*tensor) + 63) / 64 * 64;
    tensor->data = std::aligned_alloc(64, size > 0 ? size : 64);
    if (tensor->data == nullptr) TVM_FFI_THROW(RuntimeError) << "out of memory";
  }
  void FreeData(DLTensor* tensor) { std::free(tensor->data); }
};

// Copy the kept indices of each axis of `src` (compact, row-major) into `dst`, from
// axis `d` on: a run of trailing whole axes is one memcpy. `kept[d]`: the kept
// indices of axis d (`count[d]` of them), or null for an axis kept whole.
void Gather(const char* src, char* dst, const int64_t* const* kept, const int64_t* count,
            const int64_t* src_stride, const int64_t* dst_stride, int64_t d,
            int64_t whole_from, int64_t run) {
  if (d == whole_from) {
    std::memcpy(dst, src, run);
    return;
  }
  const int64_t* keep = kept[d];
  for (int64_t k = 0; k < count[d]; ++k) {
    Gather(src + (keep != nullptr ? keep[k] : k) * src_stride[d], dst + k * dst_stride[d],
           kept, count, src_stride, dst_stride, d + 1, whole_from, run);
  }
}

// The slicer of a prune's constants: scratch buffers shared by all of them.
class Slicer {
 public:
  // The start of the record after the one at `at` (handle, ncut, then per cut axis:
  // axis, count, the indices).
  static size_t Next(const int64_t* words, size_t n, size_t at) {
    if (at + 2 > n) TVM_FFI_THROW(ValueError) << "bad slices";
    int64_t ncut = words[at + 1];
    at += 2;
    for (int64_t c = 0; c < ncut; ++c) {
      if (at + 2 > n || words[at + 1] < 0) TVM_FFI_THROW(ValueError) << "bad slices";
      at += 2 + static_cast<size_t>(words[at + 1]);
    }
    if (ncut < 0 || at > n) TVM_FFI_THROW(ValueError) << "bad slices";
    return at;
  }

  // A constant's data with only the kept indices of its cut axes. `words[*at]`: the
  // record (ncut, then per cut axis: axis, count, the removed indices, increasing),
  // `*at` advanced past it.
  ObjectRef Slice(const ffi::Tensor& old, const int64_t* words, size_t n, size_t* at) {
    const DLTensor* t = old.GetDLTensorPtr();
    if (t->device.device_type != kDLCPU) {
      TVM_FFI_THROW(ValueError) << "a constant not on the CPU";
    }
    int64_t nd = t->ndim;
    kept_.clear();
    starts_.assign(nd, -1);
    shape_.resize(nd);
    for (int64_t d = 0; d < nd; ++d) shape_[d] = t->shape[d];
    if (*at >= n) TVM_FFI_THROW(ValueError) << "bad slices";
    int64_t ncut = words[(*at)++];
    for (int64_t c = 0; c < ncut; ++c) {
      if (*at + 2 > n) TVM_FFI_THROW(ValueError) << "bad slices";
      int64_t axis = words[*at], count = words[*at + 1];
      *at += 2;
      if (axis < 0 || axis >= nd || count < 0 || *at + count > n || starts_[axis] >= 0) {
        TVM_FFI_THROW(ValueError) << "bad slices";
      }
      const int64_t* removed = words + *at;
      *at += count;
      int64_t extent = t->shape[axis];
      starts_[axis] = static_cast<int64_t>(kept_.size());
      int64_t r = 0;
      for (int64_t i = 0; i < extent; ++i) {
        if (r < count && removed[r] == i) {
          while (r < count && removed[r] == i) ++r;  // (a repeat: removed once)
        } else {
          kept_.push_back(i);
        }
      }
      if (r != count) {  // (out of range, or not sorted)
        TVM_FFI_THROW(ValueError) << "removed indices not sorted within the axis";
      }
      shape_[axis] = static_cast<int64_t>(kept_.size()) - starts_[axis];
    }
    kept_ptr_.resize(nd);
    src_stride_.resize(nd);
    dst_stride_.resize(nd);
    int64_t bytes = (static_cast<int64_t>(t->dtype.bits) * t->dtype.lanes + 7) / 8;
    int64_t s = bytes, ds = bytes;
    for (int64_t d = nd - 1; d >= 0; --d) {
      if (t->strides != nullptr && t->shape[d] > 1 && t->strides[d] * bytes != s) {
        TVM_FFI_THROW(ValueError) << "a constant that is not compact";
      }
      kept_ptr_[d] = starts_[d] >= 0 ? kept_.data() + starts_[d] : nullptr;
      src_stride_[d] = s;
      dst_stride_[d] = ds;
      s *= t->shape[d];
      ds *= shape_[d];
    }
    // the trailing axes kept whole are one run of bytes
    int64_t whole_from = nd, run = bytes;
    while (whole_from > 0 && starts_[whole_from - 1] < 0) {
      --whole_from;
      run *= t->shape[whole_from];
    }
    ffi::Tensor out = ffi::Tensor::FromNDAlloc(
        AlignedAlloc(), ffi::ShapeView(shape_.data(), nd), t->dtype, t->device);
    if (ds > 0) {
      Gather(static_cast<const char*>(t->data) + t->byte_offset,
             static_cast<char*>(out.GetDLTensorPtr()->data), kept_ptr_.data(), shape_.data(),
             src_stride_.data(), dst_stride_.data(), 0, whole_from, run);
    }
    return out;
  }

 private:
  std::vector<int64_t> kept_, starts_, shape_, src_stride_, dst_stride_;
  std::vector<const int64_t*> kept_ptr_;
};

// handles (int64, native order) paired with `objects` -> map
PtrMap<ObjectRef> Objects(const ffi::Bytes& keys, const Array<ObjectRef>& objects) {
  size_t n = keys.size() / sizeof(int64_t);
  if (keys.size() % sizeof(int64_t) != 0 || n != objects.size()) {
    TVM_FFI_THROW(ValueError) << "handles and objects differ in length";
  }
  PtrMap<ObjectRef> out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t handle;
    std::memcpy(&handle, keys.data() + i * sizeof(int64_t), sizeof(int64_t));
    out.Put(reinterpret_cast<const Object*>(handle), objects[i]);
  }
  return out;
}

// `seq` (a function body) rebuilt for a prune. `cut_words`: int64 records (var or
// constant handle, the view's id of its static shape or -1, n, then n (axis, new
// extent) pairs); `typed_keys`/`typed`: vars given their new type whole (tuples);
// `slices`: constants to slice here (int64 records: handle, then as Slicer::Slice
// reads them); `const_keys`/`consts`: sliced constants and their new data (their new
// types from `cut_words`); `attr_keys`/`attrs`: calls given new attributes;
// `shape_ops`: the ops whose second argument is the output shape. The two record
// arrays are numpy's, shared through DLPack (not copied).
ObjectRef PruneRebuild(ObjectRef seq, ffi::Tensor cut_words, ffi::Bytes typed_keys,
                       Array<ObjectRef> typed, ffi::Tensor slices, ffi::Bytes const_keys,
                       Array<ObjectRef> consts,
                       ffi::Bytes attr_keys, Array<ObjectRef> attrs,
                       Array<ObjectRef> shape_ops) {
  const PruneTypes& t = GetPruneTypes();
  int64_t n_words = 0;
  const int64_t* words = Int64Words(cut_words, &n_words, "the cuts");
  size_t n = static_cast<size_t>(n_words);
  PtrMap<Cut> cuts(n / 5);
  for (size_t i = 0; i < n;) {
    if (i + 3 > n || words[i + 2] < 0 ||
        i + 3 + 2 * static_cast<size_t>(words[i + 2]) > n) {
      TVM_FFI_THROW(ValueError) << "bad cuts";
    }
    cuts.Put(reinterpret_cast<const Object*>(words[i]),
             Cut{words + i + 3, words[i + 2], words[i + 1]});
    i += 3 + 2 * static_cast<size_t>(words[i + 2]);
  }
  PtrMap<ObjectRef> typed_map = Objects(typed_keys, typed);
  PtrMap<ObjectRef> const_map = Objects(const_keys, consts);
  int64_t n_slices = 0;
  const int64_t* slice_words = Int64Words(slices, &n_slices, "the slices");
  size_t ns = static_cast<size_t>(n_slices);
  // (the records' starts first: the constants and their data, cold, are asked for a
  // few records ahead of their slicing)
  std::vector<size_t> starts;
  for (size_t at = 0; at < ns;) {
    starts.push_back(at);
    at = Slicer::Next(slice_words, ns, at);
  }
  Slicer slicer;
  const int64_t nc = static_cast<int64_t>(starts.size());
  for (int64_t j = 0; j < nc; ++j) {
    if (j + 4 < nc) {
      __builtin_prefetch(reinterpret_cast<const Object*>(slice_words[starts[j + 4]]));
    }
    if (j + 2 < nc && t.const_value.direct) {
      const Object* ahead = reinterpret_cast<const Object*>(slice_words[starts[j + 2]]);
      if (ahead != nullptr && ahead->type_index() == t.constant) {
        const Object* data = t.const_value.Get(ahead).get();
        if (data != nullptr) __builtin_prefetch(data);
        if (data != nullptr && data->type_index() == ffi::TypeIndex::kTVMFFITensor) {
          __builtin_prefetch(static_cast<const ffi::TensorObj*>(data)->data);
        }
      }
    }
    size_t at = starts[j];
    const Object* c = reinterpret_cast<const Object*>(slice_words[at++]);
    if (c == nullptr || c->type_index() != t.constant) {
      TVM_FFI_THROW(ValueError) << "a slice of a node that is not a constant";
    }
    ffi::Tensor old = t.const_value.GetAny(c).cast<ffi::Tensor>();
    const_map.Put(c, slicer.Slice(old, slice_words, ns, &at));
  }
  PtrMap<ObjectRef> attr_map = Objects(attr_keys, attrs);
  PruneRebuilder rebuilder(t, cuts, typed_map, const_map, attr_map, shape_ops);
  return rebuilder.Seq(seq);
}

}  // namespace

TVM_FFI_DLL_EXPORT_TYPED_FUNC(prune_rebuild, PruneRebuild);
