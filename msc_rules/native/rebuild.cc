// The native rebuild of msc_rules: one walk over a Relax function that writes span
// markers (<Name>..</Name><Layout>..</Layout>) on the nodes named by their handle.
//
// It mirrors msc_rules/rewrite.py (the Python rebuild) node for node, so both give
// byte-identical markers and a module structurally equal to the input. It is built
// against tvm-ffi's headers only (the apache-tvm wheel ships no relax headers): types
// are found by their type keys, fields through reflection (offsets, setters), nodes are
// copied with their `__ffi_shallow_copy__` type attribute and constructors reached as
// global functions. Anything it does not know raises, and the caller rebuilds that
// function in Python instead: never a silently wrong result.

#include <tvm/ffi/any.h>
#include <tvm/ffi/cast.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/object.h>
#include <tvm/ffi/reflection/accessor.h>
#include <tvm/ffi/string.h>

#include "common.h"

#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

using namespace msc_rules;  // NOLINT(build/namespaces): this file's own helpers

// Type indices, fields and constructors, resolved once per process.
struct Types : RelaxNodes {
  int32_t block, dataflow_block;
  std::vector<int32_t> leaves;  // exprs the rebuild keeps as they are (no vars inside)
  Field expr_span, match_cast_var, span_source, span_line, span_column, span_end_line,
      span_end_column, source_name_name;
  Function make_span, make_source_name;
  ffi::reflection::TypeAttrColumn copy_column{ffi::reflection::type_attr::kShallowCopy};

  Types() {
    block = TypeIndex("relax.expr.BindingBlock");
    dataflow_block = TypeIndex("relax.expr.DataflowBlock");
    if (block < 0 || dataflow_block < 0) {
      TVM_FFI_THROW(RuntimeError) << "a Relax node type is not registered";
    }
    for (const char* key : {"ir.Op", "ir.GlobalVar", "relax.expr.ExternFunc", "ir.IntImm",
                            "ir.FloatImm", "ir.StringImm"}) {
      int32_t index = TypeIndex(key);
      if (index >= 0) leaves.push_back(index);
    }
    expr_span = Field("ir.Expr", "span");
    match_cast_var = Field("relax.expr.MatchCast", "var");
    span_source = Field("ir.Span", "source_name");
    span_line = Field("ir.Span", "line", false);
    span_column = Field("ir.Span", "column", false);
    span_end_line = Field("ir.Span", "end_line", false);
    span_end_column = Field("ir.Span", "end_column", false);
    source_name_name = Field("ir.SourceName", "name", false);
    make_span = Function::GetGlobalRequired("ir.Span");
    make_source_name = Function::GetGlobalRequired("ir.SourceName");
  }

  bool IsLeaf(int32_t index) const {
    for (int32_t leaf : leaves) {
      if (leaf == index) return true;
    }
    // prim expressions (symbolic dims, PrimValue contents) refer to no Relax var
    const TVMFFITypeInfo* info = TVMFFIGetTypeInfo(index);
    return info != nullptr && info->type_key.size > 5 &&
           std::strncmp(info->type_key.data, "prim.", 5) == 0;
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

const Types& GetTypes() {
  static Types types;  // thread-safe initialisation (C++11)
  return types;
}

// A marker set: (key, value) pairs, viewing the marker text passed in (alive for the
// whole call).
using Pair = std::pair<std::string_view, std::string_view>;
struct Markers {
  const Pair* begin_;
  const Pair* end_;
  const Pair* begin() const { return begin_; }
  const Pair* end() const { return end_; }
};

const char* Legacy(std::string_view key) {
  if (key == "Name") return "name";
  if (key == "Layout") return "layout";
  if (key == "SharedRef") return "master";
  return nullptr;
}

// span.set_marker_text on `text`, in place: replace the first `<key>..</key>` (or its
// legacy key) with the marker, else append it. Python's regex `<key>(.*?)</key>` (re.S)
// matches at the first `<key>` that has a `</key>` after it, ending at the first such
// `</key>`.
void SetMarker(std::string* text, std::string_view key, std::string_view value) {
  if (value.empty()) return;
  std::string marker;
  marker.reserve(key.size() * 2 + value.size() + 5);
  marker.append("<").append(key).append(">").append(value).append("</").append(key).append(">");
  if (text->find('<') != std::string::npos) {
    const char* legacy = Legacy(key);
    for (std::string_view k : {key, legacy ? std::string_view(legacy) : std::string_view()}) {
      if (k.empty()) continue;
      std::string open = std::string("<").append(k).append(">");
      std::string close = std::string("</").append(k).append(">");
      size_t start = text->find(open);
      if (start == std::string::npos) continue;
      size_t end = text->find(close, start + open.size());
      if (end == std::string::npos) continue;
      text->replace(start, end + close.size() - start, marker);
      return;
    }
  }
  text->append(marker);
}

// The marker sets of one call: sets given by the caller, then composites made when a
// node has a set in several layers (`Compose`): set `n_base + i` writes the sets of
// `composites[i].first`, then those of base set `composites[i].second`, as rewriting
// with each layer in turn would.
struct MarkerSets {
  std::vector<Markers> base;
  std::vector<std::pair<int32_t, int32_t>> composites;

  size_t size() const { return base.size() + composites.size(); }

  int32_t Compose(int32_t first, int32_t then) {
    composites.emplace_back(first, then);
    return static_cast<int32_t>(base.size() + composites.size() - 1);
  }

  // `set` with its last layer's base set replaced by `then` (a later entry of the same
  // layer wins)
  int32_t Replace(int32_t set, int32_t then) {
    if (static_cast<size_t>(set) < base.size()) return then;
    return Compose(composites[set - base.size()].first, then);
  }

  void Apply(std::string* text, int32_t set) const {
    if (static_cast<size_t>(set) >= base.size()) {
      const auto& [first, then] = composites[set - base.size()];
      Apply(text, first);
      set = then;
    }
    for (const Pair& kv : base[set]) SetMarker(text, kv.first, kv.second);
  }
};

constexpr int kMaxDepth = 2000;  // nesting levels before handing the function to Python

class Rebuilder {
 public:
  Rebuilder(const Types& t, const PtrMap<int32_t>& vars,
            const PtrMap<int32_t>& values,
            const MarkerSets& sets)
      : t_(t), vars_(vars), values_(values), sets_(sets), bare_(sets.size()),
        bare_done_(sets.size(), false) {}

  ObjectRef Function(const ObjectRef& f) {
    Guard guard(this);
    Array<ObjectRef> old_params = t_.func_params.GetArray(f.get());
    Array<ObjectRef> params;
    params.reserve(old_params.size());
    for (const ObjectRef& p : old_params) params.push_back(VarDef(p));
    ObjectRef body = Expr(t_.func_body.Get(f.get()));
    ObjectRef out = t_.Copy(f);
    t_.func_params.Set(out.get(), params);
    t_.func_body.Set(out.get(), body);
    return out;
  }

 private:
  struct Guard {
    explicit Guard(Rebuilder* r) : r(r) {
      if (++r->depth_ > kMaxDepth) TVM_FFI_THROW(RuntimeError) << "module nests too deeply";
    }
    ~Guard() { --r->depth_; }
    Rebuilder* r;
  };

  // `old` (a node's span) with marker set `set` written (span.with_markers)
  ObjectRef Span(const ObjectRef& old, int32_t set) {
    if (!old.defined()) {
      if (!bare_done_[set]) {
        std::string text;
        sets_.Apply(&text, set);
        if (!text.empty()) {
          bare_[set] = t_.make_span(t_.make_source_name(text), 0, 0, 0, 0).cast<ObjectRef>();
        }
        bare_done_[set] = true;
      }
      return bare_[set];
    }
    ObjectRef source = t_.span_source.Get(old.get());
    std::string text;
    if (source.defined()) text = t_.source_name_name.GetAny(source.get()).cast<ffi::String>();
    std::string updated = text;
    sets_.Apply(&updated, set);
    if (updated == text) return old;
    const Object* s = old.get();
    return t_.make_span(t_.make_source_name(updated), t_.span_line.GetAny(s),
                        t_.span_end_line.GetAny(s), t_.span_column.GetAny(s),
                        t_.span_end_column.GetAny(s))
        .cast<ObjectRef>();
  }

  int32_t ValueSet(const Object* e) const {
    const int32_t* set = values_.Find(e);
    return set == nullptr ? -1 : *set;
  }

  ObjectRef Marked(const ObjectRef& e, int32_t set) {
    ObjectRef out = t_.Copy(e);
    t_.expr_span.Set(out.get(), Span(t_.expr_span.Get(e.get()), set));
    return out;
  }

  ObjectRef VarDef(const ObjectRef& v) {
    const int32_t* set = vars_.Find(v.get());
    if (set == nullptr) return v;
    ObjectRef nv = Marked(v, *set);
    remap_.Put(v.get(), nv);
    return nv;
  }

  ObjectRef Expr(const ObjectRef& e) {
    if (!e.defined()) return e;
    int32_t ti = e->type_index();
    if (ti == t_.var || ti == t_.dataflow_var) {
      const ObjectRef* got = remap_.Find(e.get());
      return got == nullptr ? e : *got;
    }
    if (ti == t_.call) return Call(e);
    if (ti == t_.constant) {
      const ObjectRef* got = memo_.Find(e.get());
      if (got != nullptr) return *got;
      int32_t set = ValueSet(e.get());
      ObjectRef out = set < 0 ? e : Marked(e, set);
      memo_.Put(e.get(), out);
      return out;
    }
    if (ti == t_.shape) {
      int32_t set = ValueSet(e.get());
      return set < 0 ? e : Marked(e, set);
    }
    if (ti == t_.tuple) {
      Array<ObjectRef> old_fields = t_.tuple_fields.GetArray(e.get());
      Array<ObjectRef> fields;
      bool changed = Exprs(old_fields, &fields);
      int32_t set = ValueSet(e.get());
      if (set < 0 && !changed) return e;
      ObjectRef out = set < 0 ? t_.Copy(e) : Marked(e, set);
      t_.tuple_fields.Set(out.get(), fields);
      return out;
    }
    if (ti == t_.item) {
      ObjectRef old_tuple = t_.item_tuple.Get(e.get());
      ObjectRef tuple = Expr(old_tuple);
      int32_t set = ValueSet(e.get());
      if (set < 0 && tuple.same_as(old_tuple)) return e;
      ObjectRef out = set < 0 ? t_.Copy(e) : Marked(e, set);
      t_.item_tuple.Set(out.get(), tuple);
      return out;
    }
    if (ti == t_.seq) return Seq(e);
    if (ti == t_.if_) {
      Guard guard(this);
      ObjectRef cond = Expr(t_.if_cond.Get(e.get()));
      ObjectRef yes = Expr(t_.if_true.Get(e.get()));
      ObjectRef no = Expr(t_.if_false.Get(e.get()));
      ObjectRef out = t_.Copy(e);
      t_.if_cond.Set(out.get(), cond);
      t_.if_true.Set(out.get(), yes);
      t_.if_false.Set(out.get(), no);
      return out;
    }
    if (ti == t_.function) return Function(e);
    if (t_.IsLeaf(ti)) return e;
    TVM_FFI_THROW(RuntimeError) << "the native rebuild does not handle " << e->GetTypeKey();
    TVM_FFI_UNREACHABLE();
  }

  // `out` = the rebuilt `old`; whether any element changed
  bool Exprs(const Array<ObjectRef>& old, Array<ObjectRef>* out) {
    out->reserve(old.size());
    bool changed = false;
    for (const ObjectRef& a : old) {
      ObjectRef n = Expr(a);
      changed = changed || !n.same_as(a);
      out->push_back(std::move(n));
    }
    return changed;
  }

  ObjectRef Call(const ObjectRef& e) {
    Array<ObjectRef> old_args = t_.call_args.GetArray(e.get());
    Array<ObjectRef> args;
    bool changed = Exprs(old_args, &args);
    ObjectRef old_op = t_.call_op.Get(e.get());
    ObjectRef op = old_op;
    int32_t op_ti = old_op.defined() ? old_op->type_index() : -1;
    if (op_ti == t_.var || op_ti == t_.dataflow_var) op = Expr(old_op);  // a local function
    changed = changed || !op.same_as(old_op);
    int32_t set = ValueSet(e.get());
    if (set < 0 && !changed) return e;
    ObjectRef out = set < 0 ? t_.Copy(e) : Marked(e, set);
    t_.call_args.Set(out.get(), args);
    t_.call_op.Set(out.get(), op);
    return out;
  }

  ObjectRef Seq(const ObjectRef& e) {
    Guard guard(this);
    Array<ObjectRef> old_blocks = t_.seq_blocks.GetArray(e.get());
    Array<ObjectRef> blocks;
    blocks.reserve(old_blocks.size());
    for (const ObjectRef& block : old_blocks) {
      const ObjectRef* done = memo_.Find(block.get());  // a block met twice is rebuilt once
      if (done != nullptr) {
        blocks.push_back(*done);
        continue;
      }
      int32_t bti = block->type_index();
      if (bti != t_.block && bti != t_.dataflow_block) {
        TVM_FFI_THROW(RuntimeError) << "the native rebuild does not handle "
                                    << block->GetTypeKey();
      }
      Array<ObjectRef> old_bindings =
          t_.block_bindings.GetArray(block.get());
      Array<ObjectRef> bindings;
      bindings.reserve(old_bindings.size());
      for (const ObjectRef& b : old_bindings) bindings.push_back(Binding(b));
      ObjectRef out = t_.Copy(block);
      t_.block_bindings.Set(out.get(), bindings);
      memo_.Put(block.get(), out);
      blocks.push_back(out);
    }
    ObjectRef body = Expr(t_.seq_body.Get(e.get()));
    ObjectRef out = t_.Copy(e);
    t_.seq_blocks.Set(out.get(), blocks);
    t_.seq_body.Set(out.get(), body);
    return out;
  }

  ObjectRef Binding(const ObjectRef& b) {
    int32_t ti = b->type_index();
    const Field* var_field;
    const Field* value_field;
    if (ti == t_.var_binding) {
      var_field = &t_.binding_var;
      value_field = &t_.binding_value;
    } else if (ti == t_.match_cast) {
      var_field = &t_.match_cast_var;
      value_field = &t_.match_cast_value;
    } else {
      TVM_FFI_THROW(RuntimeError) << "the native rebuild does not handle " << b->GetTypeKey();
    }
    // the value first: the var is remapped only after its definition
    ObjectRef value = Expr(value_field->Get(b.get()));
    ObjectRef var = VarDef(var_field->Get(b.get()));
    ObjectRef out = t_.Copy(b);
    var_field->Set(out.get(), var);
    value_field->Set(out.get(), value);
    return out;
  }

  const Types& t_;
  const PtrMap<int32_t>& vars_;
  const PtrMap<int32_t>& values_;
  const MarkerSets& sets_;
  std::vector<ObjectRef> bare_;
  std::vector<bool> bare_done_;
  PtrMap<ObjectRef> remap_;
  PtrMap<ObjectRef> memo_;
  int depth_ = 0;
};

// Marker sets, encoded as "key\x1fvalue\x1ekey\x1fvalue" joined by "\x1d": all pairs
// in `pairs` (views of `text`), set i made of pairs [starts[i], starts[i + 1]).
void ParseSets(std::string_view text, std::vector<Pair>* pairs, std::vector<Markers>* sets) {
  std::vector<size_t> starts;
  if (!text.empty()) {
    size_t pos = 0;
    starts.push_back(0);
    while (true) {
      size_t end = text.find_first_of("\x1d\x1e", pos);
      std::string_view pair = text.substr(pos, end == std::string_view::npos ? end : end - pos);
      size_t sep = pair.find('\x1f');
      if (sep == std::string_view::npos) TVM_FFI_THROW(ValueError) << "bad marker set";
      pairs->emplace_back(pair.substr(0, sep), pair.substr(sep + 1));
      if (end == std::string_view::npos) break;
      if (text[end] == '\x1d') starts.push_back(pairs->size());
      pos = end + 1;
    }
  }
  starts.push_back(pairs->size());
  for (size_t i = 0; i + 1 < starts.size(); ++i) {
    sets->push_back(Markers{pairs->data() + starts[i], pairs->data() + starts[i + 1]});
  }
}

// int32 values of `bytes`
std::vector<int32_t> Int32s(const ffi::Bytes& bytes) {
  if (bytes.size() % sizeof(int32_t) != 0) TVM_FFI_THROW(ValueError) << "bad int32 array";
  std::vector<int32_t> out(bytes.size() / sizeof(int32_t));
  if (!out.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

// handles (int64, native order) and set indices (int32) -> map. The pairs come in
// layers (`ends`: where each layer's pairs end; empty for one layer): within a layer
// a later pair for a handle replaces an earlier one, a handle met in a later layer gets
// a composite of its sets (see MarkerSets).
PtrMap<int32_t> ParseKeys(const ffi::Bytes& keys, const ffi::Bytes& set_bytes,
                          const ffi::Bytes& end_bytes, MarkerSets* sets) {
  size_t n = keys.size() / sizeof(int64_t);
  if (keys.size() % sizeof(int64_t) != 0 || set_bytes.size() != n * sizeof(int32_t)) {
    TVM_FFI_THROW(ValueError) << "handles and marker sets differ in length";
  }
  std::vector<int32_t> ends = Int32s(end_bytes);
  if (ends.empty()) ends.push_back(static_cast<int32_t>(n));
  if (static_cast<size_t>(ends.back()) != n) TVM_FFI_THROW(ValueError) << "bad layer ends";
  size_t n_base = sets->base.size();
  PtrMap<int32_t> out(n);
  PtrMap<int32_t> layer_of(ends.size() > 1 ? n : 0);
  size_t i = 0;
  for (int32_t layer = 0; layer < static_cast<int32_t>(ends.size()); ++layer) {
    if (ends[layer] < static_cast<int32_t>(i)) TVM_FFI_THROW(ValueError) << "bad layer ends";
    for (; i < static_cast<size_t>(ends[layer]); ++i) {
      int64_t handle;
      int32_t set;
      std::memcpy(&handle, keys.data() + i * sizeof(int64_t), sizeof(int64_t));
      std::memcpy(&set, set_bytes.data() + i * sizeof(int32_t), sizeof(int32_t));
      if (set < 0 || static_cast<size_t>(set) >= n_base) {
        TVM_FFI_THROW(ValueError) << "marker set index out of range";
      }
      const Object* key = reinterpret_cast<const Object*>(handle);
      const int32_t* old = out.Find(key);
      if (old != nullptr && ends.size() > 1) {
        bool same_layer = *layer_of.Find(key) == layer;
        set = same_layer ? sets->Replace(*old, set) : sets->Compose(*old, set);
      }
      out.Put(key, set);
      if (ends.size() > 1) layer_of.Put(key, layer);
    }
  }
  return out;
}

ObjectRef Rebuild(ObjectRef func, ffi::Bytes var_keys, ffi::Bytes var_sets,
                  ffi::Bytes value_keys, ffi::Bytes value_sets, ffi::String marker_sets,
                  ffi::Bytes var_ends, ffi::Bytes value_ends) {
  const Types& t = GetTypes();
  if (func->type_index() != t.function) {
    TVM_FFI_THROW(TypeError) << "expected a relax.Function, got " << func->GetTypeKey();
  }
  std::vector<Pair> pairs;
  MarkerSets sets;
  ParseSets(std::string_view(marker_sets.data(), marker_sets.size()), &pairs, &sets.base);
  auto vars = ParseKeys(var_keys, var_sets, var_ends, &sets);
  auto values = ParseKeys(value_keys, value_sets, value_ends, &sets);
  Rebuilder rebuilder(t, vars, values, sets);
  return rebuilder.Function(func);
}

int64_t Version() { return 3; }

}  // namespace

TVM_FFI_DLL_EXPORT_TYPED_FUNC(rebuild, Rebuild);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(version, Version);
