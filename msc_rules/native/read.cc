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
// Output: [events (bytes, int32), leaves (bytes, int32: ndim, type node, owner value,
// static shape id per leaf), handles (bytes, int64: the node of each value, for
// `value_of`), shapes (bytes, int64: per static shape its ndim then its dims), nodes
// (array), strings (array), call handles (bytes, int64: per value, the call of a call
// binding, else 0), call nodes (bytes, int32: per value, the node of a call binding and
// its number of arguments (see CALL_BINDING), else -1 0), edge sources and edge
// destinations (bytes, int32: a value id, or for a source -1 - the node of a var to
// look up), the arguments of CALL_OP sites (bytes, int32), the attributes of sites
// (bytes, int64: per entry its node, type index and structural hash, see Attrs)].
// Events and structs are described in graph.py (`_Replay`).

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
#include <map>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common.h"

namespace {

using namespace msc_rules;  // NOLINT(build/namespaces): this file's own helpers

// events (see graph.py's _Replay)
enum Event : int32_t {
  kFunc = 1, kParam, kParamsEnd, kRet, kConst, kCallBinding, kBinding, kSite, kLink,
  kPending, kEdges, kBlock, kCallOp,
};
// struct codes below 0 (a leaf id is >= 0)
constexpr int32_t kNone = -1, kTuple = -2, kValueStruct = -3, kVarLookup = -4;
// site kinds
constexpr int32_t kOpSite = 0, kPluginSite = 1, kOpaqueSite = 2;

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

constexpr int kMaxDepth = 2000;  // nesting levels before handing the function to Python

int32_t Int32(int64_t x) {
  if (x < INT32_MIN || x > INT32_MAX) TVM_FFI_THROW(ValueError) << "count out of range";
  return static_cast<int32_t>(x);
}

class Reader {
 public:
  // `globals`: the module's global vars, 1 for those of Relax functions, 0 for others
  Reader(const ReadTypes& t, int64_t first_value, int64_t first_leaf,
         const PtrMap<int32_t>& globals)
      : t_(t), first_value_(first_value), first_leaf_(first_leaf), globals_(globals) {}

  void KnownConstant(const Object* handle, int32_t vid) { value_of_.Put(handle, vid); }

  void Global(const ObjectRef& f, const std::string& name) { Function(f, name); }

  Array<Any> Output() {
    Array<ObjectRef> nodes(std::move(nodes_));
    Array<ffi::String> strings(std::move(strings_));
    return Array<Any>{ToBytes(events_), ToBytes(leaves_), ToBytes(handles_),
                      ToBytes(shapes_), nodes, strings,
                      ToBytes(call_handles_), ToBytes(call_nodes_), ToBytes(edge_src_),
                      ToBytes(edge_dst_), ToBytes(flat_), ToBytes(attrs_)};
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
      leaves_.push_back(Int32(t_.tensor_ndim.GetAny(ty.get()).cast<int64_t>()));
      leaves_.push_back(ty_node >= 0 ? ty_node : Node(ty));
      leaves_.push_back(owner);
      leaves_.push_back(StaticShape(ty));
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
    std::vector<int64_t> dims;
    for (const ObjectRef& d : t_.shape_values.GetArray(sh.value().get())) {
      if (!d.defined() || d->type_index() != t_.int_imm) return -1;
      dims.push_back(t_.int_value.GetAny(d.get()).cast<int64_t>());
    }
    auto [it, fresh] = shape_ids_.emplace(dims, static_cast<int32_t>(shape_ids_.size()));
    if (fresh) {
      shapes_.push_back(static_cast<int64_t>(dims.size()));
      shapes_.insert(shapes_.end(), dims.begin(), dims.end());
    }
    return it->second;
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
    call_nodes_.insert(call_nodes_.end(), {-1, 0});
    value_struct_.push_back(-1);
    return vid;
  }

  int32_t& StructOf(int32_t vid) { return value_struct_[vid - first_value_]; }

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
        StructOf(vid) = st;
        events_.push_back(kConst);
        events_.push_back(Node(e));
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

  // (a struct of the caller's view may be None: the replay drops such links)
  void Link(int32_t vid, int32_t src, int32_t dst) {
    if (pool_[src] == kNone || pool_[dst] == kNone) return;
    events_.push_back(kLink);
    events_.push_back(vid);
    Emit(src, &events_);
    Emit(dst, &events_);
  }

  // -- functions
  void Function(const ObjectRef& f, const std::string& name) {
    DepthGuard guard(&depth_, kMaxDepth);
    events_.push_back(kFunc);
    events_.push_back(String(name));
    for (const ObjectRef& p : t_.func_params.GetArray(f.get())) {
      int32_t vid = AddValue(p);
      int32_t st = NewStruct(t_.expr_ty.Get(p.get()), vid);
      StructOf(vid) = st;
      events_.push_back(kParam);
      events_.push_back(Node(p));
      Emit(st, &events_);
    }
    events_.push_back(kParamsEnd);
    int32_t ret = Body(name, t_.func_body.Get(f.get()));
    events_.push_back(kRet);
    Emit(ret, &events_);
  }

  int32_t Body(const std::string& fname, const ObjectRef& seq) {
    std::vector<int32_t> users;
    if (!Is(seq, t_.seq)) return ArgStruct(seq, &users);
    DepthGuard guard(&depth_, kMaxDepth);
    for (const ObjectRef& block : t_.seq_blocks.GetArray(seq.get())) {
      std::vector<int32_t> records;
      for (const ObjectRef& b : t_.block_bindings.GetArray(block.get())) {
        records.push_back(Binding(fname, b));
      }
      events_.push_back(kBlock);
      events_.push_back(Node(block));
      events_.push_back(Int32(static_cast<int64_t>(records.size())));
      events_.insert(events_.end(), records.begin(), records.end());
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
    if (vti == t_.call && bti == t_.var_binding) return CallBinding(fname, b, var, value);
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
        StructOf(vid) = alias;
        BindingEvent(b, var, value, alias);
      }
    }
    Edges(vid, users);
    return vid;
  }

  int32_t SlowBinding(const ObjectRef& b, const ObjectRef& var, const ObjectRef& value) {
    int32_t vid = AddValue(var);
    int32_t st = NewStruct(t_.expr_ty.Get(var.get()), vid);
    StructOf(vid) = st;
    BindingEvent(b, var, value, st);
    return vid;
  }

  void BindingEvent(const ObjectRef& b, const ObjectRef& var, const ObjectRef& value,
                    int32_t st) {
    // nodes first: Node() may not run between the pushes of one event
    int32_t nb = Node(b), nv = Node(var), nval = Node(value);
    value_node_ = nval;
    events_.insert(events_.end(), {kBinding, nb, nv, nval});
    Emit(st, &events_);
  }

  // graph.py's fast path: a VarBinding of a Call
  int32_t CallBinding(const std::string& fname, const ObjectRef& b, const ObjectRef& var,
                      const ObjectRef& call) {
    Array<ObjectRef> raw = t_.call_args.GetArray(call.get());
    std::vector<int32_t> users, args;
    args.reserve(raw.size());
    for (const ObjectRef& a : raw) args.push_back(ArgStruct(a, &users));
    int32_t vid = AddValue(var);
    const ObjectRef& ty = t_.expr_ty.Get(var.get());
    const ObjectRef& op = t_.call_op.Get(call.get());
    int32_t nb = Node(b), nv = Node(var), nc = Node(call), nop = Node(op), nty = Node(ty);
    call_handles_[vid - first_value_] = reinterpret_cast<int64_t>(call.get());
    call_nodes_[2 * (vid - first_value_)] = nb;
    call_nodes_[2 * (vid - first_value_) + 1] = Int32(static_cast<int64_t>(raw.size()));
    value_node_ = nc;
    std::vector<int32_t> arg_nodes;
    arg_nodes.reserve(raw.size());
    for (const ObjectRef& a : raw) arg_nodes.push_back(Node(a));
    int32_t st = NewStruct(ty, vid, nty);
    StructOf(vid) = st;
    if (CallOp(vid, nb, op, call, args, st, users)) return vid;
    events_.insert(events_.end(), {kCallBinding, nb, nv, nc, nop, nty,
                                   Int32(static_cast<int64_t>(raw.size()))});
    events_.insert(events_.end(), arg_nodes.begin(), arg_nodes.end());
    Emit(st, &events_);
    CallSite(vid, call, args);
    Edges(vid, users);
    return vid;
  }

  // The common call binding in one record of a CALL_OP run: a call of an op (not
  // call_dps_packed) whose arguments and result are leaves or None (its arguments go
  // to `flat_`: their count, then each leaf or -1). False (nothing written) for any other.
  bool CallOp(int32_t vid, int32_t binding_node, const ObjectRef& op, const ObjectRef& call,
              const std::vector<int32_t>& args, int32_t out,
              const std::vector<int32_t>& users) {
    if (!Is(op, t_.op) || pool_[out] < kNone) return false;
    for (int32_t a : args) {
      if (pool_[a] < kNone) return false;
    }
    std::string name = t_.op_name.GetAny(op.get()).cast<ffi::String>();
    if (name == "relax.call_dps_packed") return false;
    const ObjectRef& attrs = t_.call_attrs.Get(call.get());
    int32_t attrs_entry = Attrs(attrs), name_id = String(name);
    // consecutive ones share one event (a run: CALL_OP count, then 5 fields each)
    if (run_end_ != events_.size()) {
      events_.insert(events_.end(), {kCallOp, 0});
      run_at_ = events_.size() - 1;
    }
    events_.insert(events_.end(), {binding_node, attrs_entry, name_id, pool_[out],
                                   Int32(static_cast<int64_t>(flat_.size()))});
    ++events_[run_at_];
    run_end_ = events_.size();
    flat_.push_back(Int32(static_cast<int64_t>(args.size())));
    for (int32_t a : args) flat_.push_back(pool_[a]);
    Edges(vid, users);
    return true;
  }

  // graph.py's call_site
  // (`call` is the value of the binding event just emitted: node `value_node_`)
  void CallSite(int32_t vid, const ObjectRef& call, const std::vector<int32_t>& args) {
    const ObjectRef& op = t_.call_op.Get(call.get());
    int32_t out = StructOf(vid);
    if (Is(op, t_.op)) {
      std::string name = t_.op_name.GetAny(op.get()).cast<ffi::String>();
      if (name == "relax.call_dps_packed") {
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
          Site(vid, kPluginSite, String("plugin:" + sym), -1, inner, out);
          return;
        }
      }
      const ObjectRef& attrs = t_.call_attrs.Get(call.get());
      Site(vid, kOpSite, String(name), Attrs(attrs), args, out);
    } else if (Is(op, t_.global_var)) {
      const int32_t* relax = globals_.Find(op.get());
      if (relax == nullptr) {
        TVM_FFI_THROW(RuntimeError) << "a call of a global var not in the module";
      }
      if (*relax) {
        std::string callee = t_.gv_name.GetAny(op.get()).cast<ffi::String>();
        Pending(vid, 1, String(callee), args, out);
      } else {
        Site(vid, kOpaqueSite, String(""), -1, args, out);
      }
    } else if (Is(op, t_.var) && local_funcs_.Find(op.get()) != nullptr) {
      Pending(vid, 0, *local_funcs_.Find(op.get()), args, out);
    } else {
      Site(vid, kOpaqueSite, String(""), -1, args, out);
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

  void Site(int32_t vid, int32_t kind, int32_t name, int32_t attrs,
            const std::vector<int32_t>& args, int32_t out) {
    events_.insert(events_.end(), {kSite, vid, kind, name, attrs, value_node_,
                                   Int32(static_cast<int64_t>(args.size()))});
    for (int32_t a : args) Emit(a, &events_);
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
  int64_t first_value_, first_leaf_;
  const PtrMap<int32_t>& globals_;
  int64_t n_values_ = 0, n_leaves_ = 0;
  int depth_ = 0;
  int32_t value_node_ = -1;  // the node of the value of the last binding event
  size_t run_at_ = 0, run_end_ = 0;  // the count of the last CALL_OP run, and its end
  PtrMap<int32_t> value_of_;
  PtrMap<int32_t> local_funcs_;  // local function var -> its name's string id
  std::vector<int32_t> value_struct_;  // per value of this read: its pool offset
  std::vector<int32_t> pool_;
  std::vector<int32_t> events_, leaves_, call_nodes_, edge_src_, edge_dst_, flat_;
  std::vector<int64_t> handles_, shapes_, call_handles_, attrs_;
  std::map<std::vector<int64_t>, int32_t> shape_ids_;
  std::vector<ObjectRef> nodes_;
  std::vector<ffi::String> strings_;
  std::unordered_map<std::string, int32_t> string_ids_;
};

// Read global function `func` named `name`: values numbered from `first_value`, leaves
// from `first_leaf`; `const_keys` (int64 handles) and `const_ids` (int32 value ids) are
// the constants earlier functions of the view met; `global_keys` (int64 handles) and
// `global_relax` (int32, 1 or 0) the module's global vars and whether each names a
// Relax function.
Array<Any> Read(ObjectRef func, ffi::String name, int64_t first_value, int64_t first_leaf,
                ffi::Bytes const_keys, ffi::Bytes const_ids, ffi::Bytes global_keys,
                ffi::Bytes global_relax) {
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
  Reader reader(t, first_value, first_leaf, globals);
  for (size_t i = 0; i < n; ++i) {
    int64_t handle;
    int32_t vid;
    std::memcpy(&handle, const_keys.data() + i * sizeof(int64_t), sizeof(int64_t));
    std::memcpy(&vid, const_ids.data() + i * sizeof(int32_t), sizeof(int32_t));
    if (vid < 0 || vid >= first_value) TVM_FFI_THROW(ValueError) << "bad constant value id";
    reader.KnownConstant(reinterpret_cast<const Object*>(handle), vid);
  }
  reader.Global(func, std::string(name));
  return reader.Output();
}

}  // namespace

TVM_FFI_DLL_EXPORT_TYPED_FUNC(read, Read);
