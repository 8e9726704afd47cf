// The native read of msc_rules: one walk over a global Relax function that records what
// graph.py's dependency view reads of it (values, leaves, call sites, links, edges,
// binding blocks), as flat int32 arrays and a table of the nodes the view keeps.
//
// It mirrors `_Builder.function` of msc_rules/graph.py step for step (the same value
// and leaf numbering, the same order of sites, edges and block records), and graph.py
// replays the records into the same DependencyView. Python's isinstance is matched by
// type ancestry. Anything it does not know raises, and the caller reads that function
// in Python instead: never a silently wrong view.
//
// read.h declares it for naming.cc's `read_and_name` (annotate's one walk), whose naming
// walk goes along with the read of the entry function, binding by binding.
//
// Output, as final columns of the view where it can (graph.py's `_Replay` adds them
// with one bulk copy each, no Python loop per binding): [events (bytes, int32: the rare
// records, see graph.py), per value of the read: handles (int64: its node, for
// `value_of`), call handles (int64: the call of a call binding, else 0), call nodes
// (int32 triples: the nodes of a call binding, its call and its var's type, else -1s),
// structs (int32: a leaf, -1 None, -2 in a STRUCT event), functions (int32: string of
// its function); per leaf: ndim, type node, owner value, static shape id (int32 each,
// the ids numbered from `shape_base`); shapes (bytes, int64: per static shape its ndim
// then its dims), nodes (array), strings (array), edge sources and destinations
// (int32: a value id, or for a source -1 - the node of a var to look up); the flat
// arguments of sites (int32: count, then each leaf or -1), the attributes of sites
// (int64: per entry its node, type index and structural hash, see Attrs); per site:
// value, op name string, out (a leaf, else in a SITE event), its flat arguments' offset
// and attributes entry (int32 pairs, numbered from `flat_base` and `attrs_base`, -1 for
// none), its kind (uint8: 1 arguments flat, 2 attributes native), the node of its call
// (int32, -1 for a link); the records of binding blocks (int32)].

#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/structural_hash.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/object.h>
#include <tvm/ffi/optional.h>
#include <tvm/ffi/string.h>

#include <cstdint>
#include <cstring>
#include <iterator>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common.h"
#include "read.h"

namespace {

using namespace msc_rules;  // NOLINT(build/namespaces): this file's own helpers

// events (see graph.py's _Replay)
enum Event : int32_t {
  kFunc = 1, kParam, kParamsEnd, kRet, kConst, kStruct, kBinding, kSite, kLink, kPending,
  kBlock,
};
// struct codes below 0 (a leaf id is >= 0)
constexpr int32_t kNone = -1, kTuple = -2, kValueStruct = -3, kVarLookup = -4;
// a value's or site's struct column: not a leaf or None, given by an event
constexpr int32_t kInEvent = -2;
// site kinds (bits)
constexpr uint8_t kFlatArgs = 1, kNativeAttrs = 2;

struct ReadTypes : RelaxNodes {
  int32_t tensor_type, tuple_type, op, global_var, extern_func, int_imm;
  Field expr_ty, var_name, call_attrs, item_index, tensor_ndim, tensor_shape,
      tuple_type_fields, op_name, gv_name, extern_symbol, shape_values, int_value;

  ReadTypes() {
    tensor_type = TypeIndex("relax.TensorType");
    tuple_type = TypeIndex("ir.TupleType");
    op = TypeIndex("ir.Op");
    global_var = TypeIndex("ir.GlobalVar");
    extern_func = TypeIndex("relax.expr.ExternFunc");
    int_imm = TypeIndex("ir.IntImm");
    for (int32_t index : {tensor_type, tuple_type, op, global_var, extern_func, int_imm}) {
      if (index < 0) TVM_FFI_THROW(RuntimeError) << "a Relax node type is not registered";
    }
    expr_ty = Field("ir.Expr", "ty");
    var_name = Field("ir.Var", "name", false);
    call_attrs = Field("ir.Call", "attrs");
    item_index = Field("ir.TupleGetItem", "index", false);
    tensor_ndim = Field("relax.TensorType", "ndim", false);
    tensor_shape = Field("relax.TensorType", "shape", false);
    tuple_type_fields = Field("ir.TupleType", "fields");
    op_name = Field("ir.Op", "name", false);
    gv_name = Field("ir.GlobalVar", "name_hint", false);
    extern_symbol = Field("relax.expr.ExternFunc", "global_symbol", false);
    shape_values = Field("relax.expr.ShapeExpr", "values");
    int_value = Field("ir.IntImm", "value", false);
  }
};

const ReadTypes& GetReadTypes() {
  static ReadTypes types;
  return types;
}

int32_t Int32(int64_t x) {
  if (x < INT32_MIN || x > INT32_MAX) TVM_FFI_THROW(ValueError) << "count out of range";
  return static_cast<int32_t>(x);
}

// a hash of static dims (the key of the distinct shapes of a read)
struct DimsHash {
  size_t operator()(const std::vector<int64_t>& dims) const {
    uint64_t h = 1469598103934665603ull;
    for (int64_t d : dims) h = (h ^ static_cast<uint64_t>(d)) * 1099511628211ull;
    return static_cast<size_t>(h);
  }
};

class Reader {
 public:
  // `globals`: the module's global vars, 1 for those of Relax functions, 0 for others;
  // the bases: the view's values, leaves, flat arguments, attributes entries and static
  // shapes before this read
  Reader(const ReadTypes& t, int64_t first_value, int64_t first_leaf, int64_t flat_base,
         int64_t attrs_base, int64_t shape_base, const PtrMap<int32_t>& globals)
      : t_(t), first_value_(first_value), first_leaf_(first_leaf), flat_base_(flat_base),
        attrs_base_(attrs_base), shape_base_(shape_base), globals_(globals) {}

  void KnownConstant(const Object* handle, int32_t vid) { value_of_.Put(handle, vid); }

  // `hook` (if any) gets each binding of the function's top-level blocks once read
  void Global(const ObjectRef& f, const std::string& name, BindingHook* hook) {
    Function(f, name, hook);
  }

  // room for the bindings of the function's top-level blocks (most of a function); before
  // the known constants
  void Reserve(const ObjectRef& f) {
    const ObjectRef& seq = t_.func_body.Get(f.get());
    if (!Is(seq, t_.seq)) return;
    size_t n = 0;
    for (const ObjectRef& block : t_.seq_blocks.GetArray(seq.get())) {
      n += t_.block_bindings.GetArray(block.get()).size();
    }
    for (auto* v : {&value_struct_col_, &value_func_, &leaf_ndim_, &leaf_type_, &leaf_owner_,
                    &leaf_static_, &site_vid_, &site_name_, &site_out_, &site_call_,
                    &block_ids_}) {
      v->reserve(n + 8);
    }
    for (auto* v : {&site_at_, &edge_src_, &edge_dst_}) v->reserve(2 * n + 8);
    call_nodes_.reserve(3 * n + 8);
    pool_.reserve(4 * n + 8);
    value_struct_.reserve(n + 8);
    flat_.reserve(3 * n + 8);
    handles_.reserve(n + 8);
    call_handles_.reserve(n + 8);
    site_kind_.reserve(n + 8);
    nodes_.reserve(4 * n + 8);
    value_of_ = PtrMap<int32_t>(n);
  }

  Array<Any> Output() {
    // (moved in: a copy would touch every node's count twice more, cold by now)
    Array<ObjectRef> nodes(std::make_move_iterator(nodes_.begin()),
                           std::make_move_iterator(nodes_.end()));
    nodes_.clear();
    Array<ffi::String> strings(std::move(strings_));
    return Array<Any>{ToBytes(events_), ToBytes(handles_), ToBytes(call_handles_),
                      ToBytes(call_nodes_), ToBytes(value_struct_col_), ToBytes(value_func_),
                      ToBytes(leaf_ndim_), ToBytes(leaf_type_), ToBytes(leaf_owner_),
                      ToBytes(leaf_static_), ToBytes(shapes_), nodes, strings,
                      ToBytes(edge_src_), ToBytes(edge_dst_), ToBytes(flat_), ToBytes(attrs_),
                      ToBytes(site_vid_), ToBytes(site_name_), ToBytes(site_out_),
                      ToBytes(site_at_), ToBytes(site_kind_), ToBytes(site_call_),
                      ToBytes(block_ids_)};
  }

 private:
  bool Is(const ObjectRef& e, int32_t base) const {
    return e.defined() && DerivesFrom(e->type_index(), base);
  }

  int32_t Node(const ObjectRef& n) {
    nodes_.push_back(n);
    return Int32(static_cast<int64_t>(nodes_.size()) - 1);
  }

  int32_t String(const std::string& s) {
    auto [it, fresh] = string_ids_.emplace(s, static_cast<int32_t>(strings_.size()));
    if (fresh) strings_.push_back(ffi::String(s));
    return it->second;
  }

  // an op's name as a string id (ops are global singletons: each name read once)
  int32_t OpName(const ObjectRef& op, bool* dps_packed) {
    bool fresh;
    int32_t* got = op_names_.Insert(op.get(), &fresh);
    if (fresh) {
      std::string name = t_.op_name.GetAny(op.get()).cast<ffi::String>();
      *got = name == "relax.call_dps_packed" ? -1 - String(name) : String(name);
    }
    *dps_packed = *got < 0;
    return *got < 0 ? -1 - *got : *got;
  }

  // -- structs: kept in `pool_` (encoded as in the events), referred to by offset
  // graph.py's new_struct (`ty_node`: the node of `ty` if it is one already)
  int32_t NewStruct(const ObjectRef& ty, int32_t owner, int32_t ty_node = -1) {
    int32_t at = Int32(static_cast<int64_t>(pool_.size()));
    WriteNewStruct(ty, owner, ty_node);
    return at;
  }

  void WriteNewStruct(const ObjectRef& ty, int32_t owner, int32_t ty_node = -1) {
    if (Is(ty, t_.tensor_type)) {
      int32_t leaf = Int32(first_leaf_ + n_leaves_++);
      leaf_ndim_.push_back(Int32(t_.tensor_ndim.GetAny(ty.get()).cast<int64_t>()));
      leaf_type_.push_back(ty_node >= 0 ? ty_node : Node(ty));
      leaf_owner_.push_back(owner);
      leaf_static_.push_back(StaticShape(ty));
      pool_.push_back(leaf);
    } else if (Is(ty, t_.tuple_type)) {
      Array<ObjectRef> fields = t_.tuple_type_fields.GetArray(ty.get());
      pool_.push_back(kTuple);
      pool_.push_back(Int32(static_cast<int64_t>(fields.size())));
      for (const ObjectRef& f : fields) WriteNewStruct(f, owner);
    } else {
      pool_.push_back(kNone);
    }
  }

  // the id of a tensor type's shape when it is a ShapeExpr of IntImms, else -1
  int32_t StaticShape(const ObjectRef& ty) {
    auto sh = t_.tensor_shape.GetAny(ty.get()).cast<ffi::Optional<ObjectRef>>();
    if (!sh.has_value() || (*sh)->type_index() != t_.shape) return -1;
    dims_.clear();
    for (const ObjectRef& d : t_.shape_values.GetArray(sh.value().get())) {
      if (!d.defined() || d->type_index() != t_.int_imm) return -1;
      dims_.push_back(t_.int_value.GetInt64(d.get()));
    }
    // (find first: emplace would make a node, copying the dims, for every leaf)
    auto it = shape_ids_.find(dims_);
    if (it == shape_ids_.end()) {
      it = shape_ids_.emplace(dims_, static_cast<int32_t>(shape_ids_.size())).first;
      shapes_.push_back(static_cast<int64_t>(dims_.size()));
      shapes_.insert(shapes_.end(), dims_.begin(), dims_.end());
    }
    return Int32(shape_base_ + it->second);
  }

  // offset in the pool just past the struct at `at`
  size_t Skip(size_t at) const {
    int32_t code = pool_[at];
    if (code == kTuple) {
      int32_t n = pool_[at + 1];
      at += 2;
      for (int32_t i = 0; i < n; ++i) at = Skip(at);
      return at;
    }
    return at + (code == kValueStruct || code == kVarLookup ? 2 : 1);
  }

  void Emit(size_t at, std::vector<int32_t>* out) const {
    out->insert(out->end(), pool_.begin() + at, pool_.begin() + Skip(at));
  }

  int32_t NoneStruct() {
    pool_.push_back(kNone);
    return Int32(static_cast<int64_t>(pool_.size()) - 1);
  }

  // -- values
  int32_t AddValue(const ObjectRef& expr) {
    int32_t vid = Int32(first_value_ + n_values_++);
    value_of_.Put(expr.get(), vid);
    handles_.push_back(reinterpret_cast<int64_t>(expr.get()));
    call_handles_.push_back(0);
    call_nodes_.insert(call_nodes_.end(), {-1, -1, -1});
    value_struct_.push_back(-1);
    value_struct_col_.push_back(kNone);
    value_func_.push_back(func_);
    return vid;
  }

  int32_t& StructOf(int32_t vid) { return value_struct_[vid - first_value_]; }

  // value `vid`'s struct is the one at pool offset `st` (a STRUCT event for a call
  // binding's that is neither a leaf nor None: the other values' events carry theirs)
  void SetStruct(int32_t vid, int32_t st, bool call_binding) {
    StructOf(vid) = st;
    int32_t code = pool_[st];
    if (code >= kNone) {
      value_struct_col_[vid - first_value_] = code;
      return;
    }
    value_struct_col_[vid - first_value_] = kInEvent;
    if (call_binding) {
      events_.insert(events_.end(), {kStruct, vid});
      Emit(st, &events_);
    }
  }

  // graph.py's struct_of: the struct an argument refers to (a pool offset); the values
  // it reads go to `users`
  int32_t ArgStruct(const ObjectRef& e, std::vector<int32_t>* users) {
    if (!e.defined()) return NoneStruct();
    int32_t ti = e->type_index();
    if (ti == t_.shape) return NoneStruct();
    bool is_const = DerivesFrom(ti, t_.constant);
    if (!is_const && DerivesFrom(ti, t_.var)) {
      const int32_t* vid = value_of_.Find(e.get());
      if (vid == nullptr) {
        // a local function is no tensor; any other var not defined here before its use
        // (a symbolic var, say) is looked up in the caller's view, as graph.py does
        if (local_funcs_.Find(e.get()) != nullptr) return NoneStruct();
        int32_t node = Node(e);
        users->push_back(-1 - node);
        int32_t at = Int32(static_cast<int64_t>(pool_.size()));
        pool_.push_back(kVarLookup);
        pool_.push_back(node);
        return at;
      }
      users->push_back(*vid);
      return ValueStruct(*vid);
    }
    if (is_const) {
      const int32_t* known = value_of_.Find(e.get());
      int32_t vid;
      if (known == nullptr) {
        vid = AddValue(e);
        int32_t st = NewStruct(t_.expr_ty.Get(e.get()), vid);
        SetStruct(vid, st, false);
        events_.insert(events_.end(), {kConst, vid, Node(e)});
        Emit(st, &events_);
      } else {
        vid = *known;
      }
      users->push_back(vid);
      return ValueStruct(vid);
    }
    if (DerivesFrom(ti, t_.tuple)) {
      Array<ObjectRef> fields = t_.tuple_fields.GetArray(e.get());
      std::vector<int32_t> parts;
      parts.reserve(fields.size());
      for (const ObjectRef& f : fields) parts.push_back(ArgStruct(f, users));
      int32_t at = Int32(static_cast<int64_t>(pool_.size()));
      pool_.push_back(kTuple);
      pool_.push_back(Int32(static_cast<int64_t>(parts.size())));
      for (int32_t p : parts) {
        size_t end = Skip(p);
        for (size_t i = p; i < end; ++i) pool_.push_back(pool_[i]);
      }
      return at;
    }
    if (DerivesFrom(ti, t_.item)) {
      int32_t base = ArgStruct(t_.item_tuple.Get(e.get()), users);
      Known(base, "an item of a value of another function");
      if (pool_[base] != kTuple) return NoneStruct();
      int64_t index = t_.item_index.GetAny(e.get()).cast<int64_t>();
      int32_t n = pool_[base + 1];
      if (index < 0 || index >= n) return NoneStruct();
      size_t at = base + 2;
      for (int64_t i = 0; i < index; ++i) at = Skip(at);
      return Int32(static_cast<int64_t>(at));
    }
    return NoneStruct();
  }

  // raise unless the struct at `at` is known here (not one of the caller's view)
  void Known(int32_t at, const char* what) const {
    if (pool_[at] == kValueStruct || pool_[at] == kVarLookup) {
      TVM_FFI_THROW(RuntimeError) << "the native read does not handle " << what;
    }
  }

  // the struct of value `vid`: its own, or a reference for a constant of an earlier
  // function (the caller's view knows its struct)
  int32_t ValueStruct(int32_t vid) {
    if (vid >= first_value_) return StructOf(vid);
    int32_t at = Int32(static_cast<int64_t>(pool_.size()));
    pool_.push_back(kValueStruct);
    pool_.push_back(vid);
    return at;
  }

  // edges from `users` (value ids, or -1 - the node of a var to look up) to `dst`
  void Edges(int32_t dst, const std::vector<int32_t>& users) {
    edge_src_.insert(edge_src_.end(), users.begin(), users.end());
    edge_dst_.insert(edge_dst_.end(), users.size(), dst);
  }

  // a site's columns (its out and, unless `flat`, its arguments then come in an event)
  int32_t SiteColumns(int32_t vid, int32_t name, int32_t out, int32_t flat_at,
                      int32_t attrs_entry, int32_t call_node) {
    int32_t site = Int32(static_cast<int64_t>(site_vid_.size()));
    site_vid_.push_back(vid);
    site_call_.push_back(call_node);
    site_name_.push_back(name);
    site_out_.push_back(out);
    site_at_.insert(site_at_.end(), {flat_at < 0 ? -1 : Int32(flat_base_ + flat_at),
                                     attrs_entry < 0 ? -1 : Int32(attrs_base_ + attrs_entry)});
    site_kind_.push_back(static_cast<uint8_t>((flat_at >= 0 ? kFlatArgs : 0) |
                                              (attrs_entry >= 0 ? kNativeAttrs : 0)));
    return site;
  }

  // (a struct of the caller's view may be None: the replay drops such links)
  void Link(int32_t vid, int32_t src, int32_t dst) {
    if (pool_[src] == kNone || pool_[dst] == kNone) return;
    int32_t site = SiteColumns(vid, String("<link>"), kInEvent, -1, -1, -1);
    events_.insert(events_.end(), {kLink, site});
    Emit(src, &events_);
    Emit(dst, &events_);
  }

  // -- functions
  void Function(const ObjectRef& f, const std::string& name, BindingHook* hook = nullptr) {
    DepthGuard guard(&depth_, kMaxFunctionDepth);
    int32_t outer = func_;
    func_ = String(name);
    events_.push_back(kFunc);
    events_.push_back(func_);
    for (const ObjectRef& p : t_.func_params.GetArray(f.get())) {
      int32_t vid = AddValue(p);
      int32_t st = NewStruct(t_.expr_ty.Get(p.get()), vid);
      SetStruct(vid, st, false);
      events_.insert(events_.end(), {kParam, vid, Node(p)});
      Emit(st, &events_);
    }
    events_.push_back(kParamsEnd);
    int32_t ret = Body(name, t_.func_body.Get(f.get()), hook);
    events_.push_back(kRet);
    Emit(ret, &events_);
    func_ = outer;
  }

  int32_t Body(const std::string& fname, const ObjectRef& seq, BindingHook* hook = nullptr) {
    std::vector<int32_t> users;
    if (!Is(seq, t_.seq)) return ArgStruct(seq, &users);
    DepthGuard guard(&depth_, kMaxFunctionDepth);
    for (const ObjectRef& block : t_.seq_blocks.GetArray(seq.get())) {
      std::vector<int32_t> records;
      Array<ObjectRef> bindings = t_.block_bindings.GetArray(block.get());
      const ffi::ArrayObj* arr = bindings.as<ffi::ArrayObj>();
      for (int64_t i = 0; i < static_cast<int64_t>(bindings.size()); ++i) {
        PrefetchBindings(t_, Lookahead{&t_.expr_ty, &t_.call_op, true}, arr, i);
        const ObjectRef& b = bindings[i];
        records.push_back(Binding(fname, b));
        if (hook != nullptr) hook->Binding(b);
      }
      events_.insert(events_.end(), {kBlock, Node(block),
                                     Int32(static_cast<int64_t>(records.size())),
                                     Int32(static_cast<int64_t>(block_ids_.size()))});
      block_ids_.insert(block_ids_.end(), records.begin(), records.end());
    }
    return ArgStruct(t_.seq_body.Get(seq.get()), &users);
  }

  // one binding; its record: the value id, or -1 - node of the binding (local function)
  int32_t Binding(const std::string& fname, const ObjectRef& b) {
    int32_t bti = b->type_index();
    bool is_match_cast = DerivesFrom(bti, t_.match_cast);
    if (!is_match_cast && !DerivesFrom(bti, t_.var_binding)) {
      TVM_FFI_THROW(RuntimeError) << "the native read does not handle " << b->GetTypeKey();
    }
    const ObjectRef& var = t_.binding_var.Get(b.get());
    const ObjectRef& value =
        is_match_cast ? t_.match_cast_value.Get(b.get()) : t_.binding_value.Get(b.get());
    if (!var.defined() || !value.defined()) {
      TVM_FFI_THROW(RuntimeError) << "a binding without a var or a value";
    }
    int32_t vti = value->type_index();
    if (vti == t_.call && bti == t_.var_binding) return CallBinding(b, var, value);
    std::vector<int32_t> users;
    if (DerivesFrom(vti, t_.function)) {
      std::string local = fname + "." + std::string(t_.var_name.GetAny(var.get())
                                                        .cast<ffi::String>());
      local_funcs_.Put(var.get(), String(local));
      Function(value, local);
      return -1 - Node(b);
    }
    int32_t vid;
    if (is_match_cast) {
      int32_t src = ArgStruct(value, &users);
      vid = SlowBinding(b, var, value);
      Link(vid, src, StructOf(vid));
    } else if (DerivesFrom(vti, t_.call)) {
      std::vector<int32_t> args;
      for (const ObjectRef& a : t_.call_args.GetArray(value.get())) {
        args.push_back(ArgStruct(a, &users));
      }
      vid = SlowBinding(b, var, value);
      CallSite(vid, value, args);
    } else if (DerivesFrom(vti, t_.if_)) {
      ArgStruct(t_.if_cond.Get(value.get()), &users);
      int32_t yes = Body(fname, t_.if_true.Get(value.get()));
      int32_t no = Body(fname, t_.if_false.Get(value.get()));
      vid = SlowBinding(b, var, value);
      Link(vid, yes, StructOf(vid));
      Link(vid, no, StructOf(vid));
    } else {
      int32_t alias = ArgStruct(value, &users);
      Known(alias, "an alias of a value of another function");
      if (pool_[alias] == kNone) {
        vid = SlowBinding(b, var, value);
      } else {
        vid = AddValue(var);
        SetStruct(vid, alias, false);
        BindingEvent(vid, b, var, value, alias);
      }
    }
    Edges(vid, users);
    return vid;
  }

  int32_t SlowBinding(const ObjectRef& b, const ObjectRef& var, const ObjectRef& value) {
    int32_t vid = AddValue(var);
    int32_t st = NewStruct(t_.expr_ty.Get(var.get()), vid);
    SetStruct(vid, st, false);
    BindingEvent(vid, b, var, value, st);
    return vid;
  }

  void BindingEvent(int32_t vid, const ObjectRef& b, const ObjectRef& var,
                    const ObjectRef& value, int32_t st) {
    // nodes first: Node() may not run between the pushes of one event
    int32_t nb = Node(b), nv = Node(var), nval = Node(value);
    call_node_ = nval;
    events_.insert(events_.end(), {kBinding, vid, nb, nv, nval});
    Emit(st, &events_);
  }

  // graph.py's fast path, a VarBinding of a Call: a value made when asked for (its
  // nodes from the binding's), with no event unless its struct is neither a leaf nor None
  int32_t CallBinding(const ObjectRef& b, const ObjectRef& var, const ObjectRef& call) {
    Array<ObjectRef> raw = t_.call_args.GetArray(call.get());
    // (scratch vectors of the reader: no allocation per binding; nothing below reads a
    // binding, so nothing reenters)
    std::vector<int32_t>& users = call_users_;
    std::vector<int32_t>& args = call_args_;
    users.clear();
    args.clear();
    for (const ObjectRef& a : raw) args.push_back(ArgStruct(a, &users));
    int32_t vid = AddValue(var);
    const ObjectRef& ty = t_.expr_ty.Get(var.get());
    int32_t nb = Node(b), nc = Node(call), nty = Node(ty);
    size_t i = vid - first_value_;
    call_handles_[i] = reinterpret_cast<int64_t>(call.get());
    call_nodes_[3 * i] = nb;
    call_nodes_[3 * i + 1] = nc;
    call_nodes_[3 * i + 2] = nty;
    call_node_ = nc;
    SetStruct(vid, NewStruct(ty, vid, nty), true);
    CallSite(vid, call, args);
    Edges(vid, users);
    return vid;
  }

  // graph.py's call_site
  void CallSite(int32_t vid, const ObjectRef& call, const std::vector<int32_t>& args) {
    const ObjectRef& op = t_.call_op.Get(call.get());
    int32_t out = StructOf(vid);
    if (Is(op, t_.op)) {
      bool dps_packed;
      int32_t name = OpName(op, &dps_packed);
      if (dps_packed) {
        Array<ObjectRef> raw = t_.call_args.GetArray(call.get());
        if (!raw.empty() && Is(raw[0], t_.extern_func)) {
          std::string sym = t_.extern_symbol.GetAny(raw[0].get()).cast<ffi::String>();
          std::vector<int32_t> inner;
          if (args.size() > 1) Known(args[1], "extern arguments of another function");
          if (args.size() > 1 && pool_[args[1]] == kTuple) {
            int32_t n = pool_[args[1] + 1];
            size_t at = args[1] + 2;
            for (int32_t i = 0; i < n; ++i, at = Skip(at)) inner.push_back(Int32(at));
          }
          Site(vid, String("plugin:" + sym), -1, inner, out);
          return;
        }
      }
      Site(vid, name, Attrs(t_.call_attrs.Get(call.get())), args, out);
    } else if (Is(op, t_.global_var)) {
      const int32_t* relax = globals_.Find(op.get());
      if (relax == nullptr) {
        TVM_FFI_THROW(RuntimeError) << "a call of a global var not in the module";
      }
      if (*relax) {
        std::string callee = t_.gv_name.GetAny(op.get()).cast<ffi::String>();
        Pending(vid, 1, String(callee), args, out);
      } else {
        Site(vid, String(""), -1, args, out);
      }
    } else if (Is(op, t_.var) && local_funcs_.Find(op.get()) != nullptr) {
      Pending(vid, 0, *local_funcs_.Find(op.get()), args, out);
    } else {
      Site(vid, String(""), -1, args, out);
    }
  }

  // A call's attributes as an entry of `attrs_` (-1 for none): their node, type index
  // and structural hash (the engine's key of equal attributes; type index -1 when
  // they do not hash)
  int32_t Attrs(const ObjectRef& attrs) {
    if (!attrs.defined()) return -1;
    int32_t entry = Int32(static_cast<int64_t>(attrs_.size() / 3));
    int64_t type = attrs->type_index(), hash = 0;
    try {
      hash = static_cast<int64_t>(ffi::StructuralHash::Hash(attrs, false, false));
    } catch (const ffi::Error&) {
      type = -1;
    }
    attrs_.insert(attrs_.end(), {Node(attrs), type, hash});
    return entry;
  }

  // A site: its arguments go to `flat_` (their count, then each leaf or -1) when they
  // are all leaves or None, else into a SITE event, as its out when not a leaf
  void Site(int32_t vid, int32_t name, int32_t attrs, const std::vector<int32_t>& args,
            int32_t out) {
    bool flat = true;
    for (int32_t a : args) flat = flat && pool_[a] >= kNone;
    int32_t flat_at = -1;
    if (flat) {
      flat_at = Int32(static_cast<int64_t>(flat_.size()));
      flat_.push_back(Int32(static_cast<int64_t>(args.size())));
      for (int32_t a : args) flat_.push_back(pool_[a]);
    }
    int32_t code = pool_[out];
    int32_t site = SiteColumns(vid, name, code >= 0 ? code : kInEvent, flat_at, attrs,
                               call_node_);
    if (flat && code >= 0) return;
    events_.insert(events_.end(), {kSite, site, flat ? -1 : Int32(static_cast<int64_t>(
                                                                  args.size()))});
    if (!flat) {
      for (int32_t a : args) Emit(a, &events_);
    }
    Emit(out, &events_);
  }

  void Pending(int32_t vid, int32_t global, int32_t callee, const std::vector<int32_t>& args,
               int32_t out) {
    events_.insert(events_.end(), {kPending, vid, global, callee,
                                   Int32(static_cast<int64_t>(args.size()))});
    for (int32_t a : args) Emit(a, &events_);
    Emit(out, &events_);
  }

  const ReadTypes& t_;
  int64_t first_value_, first_leaf_, flat_base_, attrs_base_, shape_base_;
  const PtrMap<int32_t>& globals_;
  int64_t n_values_ = 0, n_leaves_ = 0;
  int depth_ = 0;
  int32_t func_ = -1;  // the string of the function being read
  int32_t call_node_ = -1;  // the node of the value of the binding read last
  PtrMap<int32_t> value_of_;
  PtrMap<int32_t> local_funcs_;  // local function var -> its name's string id
  PtrMap<int32_t> op_names_;  // op -> its name's string id (-1 - it for call_dps_packed)
  std::vector<int32_t> value_struct_;  // per value of this read: its pool offset
  std::vector<int32_t> pool_;
  std::vector<int32_t> events_, call_nodes_, value_struct_col_, value_func_, leaf_ndim_,
      leaf_type_, leaf_owner_, leaf_static_, edge_src_, edge_dst_, flat_, site_vid_,
      site_name_, site_out_, site_at_, site_call_, block_ids_;
  std::vector<uint8_t> site_kind_;
  std::vector<int64_t> handles_, shapes_, call_handles_, attrs_, dims_;
  std::unordered_map<std::vector<int64_t>, int32_t, DimsHash> shape_ids_;
  std::vector<int32_t> call_users_, call_args_;
  std::vector<ObjectRef> nodes_;
  std::vector<ffi::String> strings_;
  std::unordered_map<std::string, int32_t> string_ids_;
};

}  // namespace

namespace msc_rules {

Array<Any> ReadFunction(ObjectRef func, ffi::String name, int64_t first_value,
                        int64_t first_leaf, int64_t flat_base, int64_t attrs_base,
                        int64_t shape_base, ffi::Bytes const_keys, ffi::Bytes const_ids,
                        ffi::Bytes global_keys, ffi::Bytes global_relax, BindingHook* hook) {
  const ReadTypes& t = GetReadTypes();
  if (!func.defined() || func->type_index() != t.function) {
    TVM_FFI_THROW(TypeError) << "expected a relax.Function";
  }
  size_t n = const_keys.size() / sizeof(int64_t);
  if (const_keys.size() % sizeof(int64_t) != 0 || const_ids.size() != n * sizeof(int32_t)) {
    TVM_FFI_THROW(ValueError) << "constant handles and value ids differ in length";
  }
  size_t n_globals = global_keys.size() / sizeof(int64_t);
  if (global_keys.size() % sizeof(int64_t) != 0 ||
      global_relax.size() != n_globals * sizeof(int32_t)) {
    TVM_FFI_THROW(ValueError) << "global var handles and kinds differ in length";
  }
  PtrMap<int32_t> globals(n_globals);
  for (size_t i = 0; i < n_globals; ++i) {
    int64_t handle;
    int32_t relax;
    std::memcpy(&handle, global_keys.data() + i * sizeof(int64_t), sizeof(int64_t));
    std::memcpy(&relax, global_relax.data() + i * sizeof(int32_t), sizeof(int32_t));
    globals.Put(reinterpret_cast<const Object*>(handle), relax);
  }
  Reader reader(t, first_value, first_leaf, flat_base, attrs_base, shape_base, globals);
  reader.Reserve(func);
  for (size_t i = 0; i < n; ++i) {
    int64_t handle;
    int32_t vid;
    std::memcpy(&handle, const_keys.data() + i * sizeof(int64_t), sizeof(int64_t));
    std::memcpy(&vid, const_ids.data() + i * sizeof(int32_t), sizeof(int32_t));
    if (vid < 0 || vid >= first_value) TVM_FFI_THROW(ValueError) << "bad constant value id";
    reader.KnownConstant(reinterpret_cast<const Object*>(handle), vid);
  }
  reader.Global(func, std::string(name), hook);
  return reader.Output();
}

}  // namespace msc_rules

namespace {

// read.h's ReadFunction alone (no walk goes with it)
Array<Any> Read(ObjectRef func, ffi::String name, int64_t first_value, int64_t first_leaf,
                int64_t flat_base, int64_t attrs_base, int64_t shape_base,
                ffi::Bytes const_keys, ffi::Bytes const_ids, ffi::Bytes global_keys,
                ffi::Bytes global_relax) {
  return ReadFunction(std::move(func), std::move(name), first_value, first_leaf, flat_base,
                      attrs_base, shape_base, std::move(const_keys), std::move(const_ids),
                      std::move(global_keys), std::move(global_relax), nullptr);
}

}  // namespace

TVM_FFI_DLL_EXPORT_TYPED_FUNC(read, Read);
