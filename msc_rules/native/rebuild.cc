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

#include <algorithm>
#include <cstring>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>
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
  Function make_span;
  int32_t span = -1;
  ObjectRef empty_span;  // Span(SourceName(""), 0, 0, 0, 0): what a bare span copies
  TVMFFIObjectCreator new_source_name = nullptr;
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
    span = TypeIndex("ir.Span");
    const TVMFFITypeInfo* source_info = TVMFFIGetTypeInfo(TypeIndex("ir.SourceName"));
    if (source_info != nullptr && source_info->metadata != nullptr) {
      new_source_name = source_info->metadata->creator;
    }
    if (new_source_name == nullptr) {
      TVM_FFI_THROW(RuntimeError) << "ir.SourceName has no reflection creator";
    }
    for (int32_t index : {var, dataflow_var, call, constant, tuple, item, seq, if_, function,
                          shape, var_binding, match_cast, block, dataflow_block, span}) {
      AnyView fn = copy_column[index];
      if (fn.type_index() != ffi::TypeIndex::kTVMFFIFunction) continue;
      if (copies.size() <= static_cast<size_t>(index)) copies.resize(index + 1);
      copies[index] = fn.cast<Function>();
    }
    empty_span = make_span(SourceName(""), 0, 0, 0, 0).cast<ObjectRef>();
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
    int32_t ti = node->type_index();
    if (static_cast<size_t>(ti) < copies.size() && copies[ti] != nullptr) {
      return copies[ti](node).cast<ObjectRef>();
    }
    AnyView fn = copy_column[ti];
    if (fn.type_index() != ffi::TypeIndex::kTVMFFIFunction) {
      TVM_FFI_THROW(RuntimeError) << "no __ffi_shallow_copy__ for " << node->GetTypeKey();
    }
    return fn.cast<Function>()(node).cast<ObjectRef>();
  }

  // A SourceName holding `text`, made through the type's reflection creator instead of
  // the `ir.SourceName` constructor: that one interns every text in a global table that
  // is never freed, and each binding's Name marker is a new text. Nothing in TVM looks a
  // span's source name up by identity except a module's source map (parsed sources,
  // which markers never name), so a fresh one is freed with the module instead.
  ObjectRef SourceName(std::string_view text) const {
    TVMFFIObjectHandle handle;
    TVM_FFI_CHECK_SAFE_CALL(new_source_name(&handle));
    ObjectRef out(ffi::details::ObjectUnsafe::ObjectPtrFromOwned<Object>(
        static_cast<TVMFFIObject*>(handle)));
    source_name_name.Set(out.get(), ffi::String(text.data(), text.size()));
    return out;
  }

  // A span like `like` (an ir.Span: its lines and columns) with source name `text`: a
  // copy of it, cheaper than the constructor (a call with five packed arguments).
  ObjectRef SpanLike(const ObjectRef& like, std::string_view text) const {
    if (like->type_index() != span) {  // (a SequentialSpan: a plain Span is written)
      const Object* s = like.get();
      return make_span(SourceName(text), span_line.GetAny(s), span_end_line.GetAny(s),
                       span_column.GetAny(s), span_end_column.GetAny(s))
          .cast<ObjectRef>();
    }
    ObjectRef out = Copy(like);
    span_source.SetRef(out.get(), SourceName(text));
    return out;
  }

  // The copy functions of the nodes the rebuild copies most, by type index (looked up
  // once instead of on every copy)
  std::vector<Function> copies;
};

const Types& GetTypes() {
  static Types types;  // thread-safe initialisation (C++11)
  return types;
}

// A (key, value) marker pair, viewing the strings passed in (alive for the whole call).
using Pair = std::pair<std::string_view, std::string_view>;

const char* Legacy(std::string_view key) {
  if (key == "Name") return "name";
  if (key == "Layout") return "layout";
  if (key == "SharedRef") return "master";
  return nullptr;
}

// Where tag `<key>` (`</key>` if `closing`) first occurs in `text` at or after `from`.
size_t FindTag(std::string_view text, std::string_view key, bool closing, size_t from) {
  size_t pre = closing ? 2 : 1;
  size_t len = pre + key.size() + 1;
  for (size_t at = text.find('<', from); at != std::string_view::npos && at + len <= text.size();
       at = text.find('<', at + 1)) {
    if (closing && text[at + 1] != '/') continue;
    if (text.compare(at + pre, key.size(), key) == 0 && text[at + pre + key.size()] == '>') {
      return at;
    }
  }
  return std::string_view::npos;
}

// span.set_marker_text on `text`, in place: replace the first `<key>..</key>` (or its
// legacy key) with the marker, else append it. Python's regex `<key>(.*?)</key>` (re.S)
// matches at the first `<key>` that has a `</key>` after it, ending at the first such
// `</key>` (and if the first `<key>` has none after it, no later one has).
void SetMarker(std::string* text, std::string_view key, std::string_view value) {
  if (value.empty()) return;
  if (text->find('<') != std::string::npos) {
    const char* legacy = Legacy(key);
    for (std::string_view k : {key, legacy ? std::string_view(legacy) : std::string_view()}) {
      if (k.empty()) continue;
      size_t start = FindTag(*text, k, false, 0);
      if (start == std::string::npos) continue;
      size_t inner = start + k.size() + 2;
      size_t end = FindTag(*text, k, true, inner);
      if (end == std::string::npos) continue;
      if (k.data() == key.data()) {  // the same key: only its value changes
        text->replace(inner, end - inner, value);
      } else {
        std::string marker;
        marker.append("<").append(key).append(">").append(value).append("</").append(key).append(
            ">");
        text->replace(start, end + k.size() + 3 - start, marker);
      }
      return;
    }
  }
  text->append("<").append(key).append(">").append(value).append("</").append(key).append(">");
}

// The marker sets of one call. Set s writes the sets of `prefix` first (if >= 0), then
// pairs [start, end): a set given by the caller has no prefix; a node with sets in
// several layers gets a composite (`Compose`), as rewriting with each layer in turn would.
class MarkerSets {
 public:
  std::vector<Pair> pairs;

  int32_t Add(uint32_t start, uint32_t end) {
    bool plain = true;  // no '<' in its strings: see Render
    for (uint32_t i = start; i < end && plain; ++i) {
      plain = pairs[i].first.find('<') == std::string_view::npos &&
              pairs[i].second.find('<') == std::string_view::npos;
    }
    return Push(Set{-1, start, end, plain});
  }
  size_t size() const { return sets_.size(); }

  // `first`, then the pairs of `then` (a set with no prefix)
  int32_t Compose(int32_t first, int32_t then) {
    const Set& t = sets_[then];
    return Push(Set{first, t.start, t.end, t.plain});
  }

  // `set` with its last layer's pairs replaced by those of `then` (a later entry of the
  // same layer wins)
  int32_t Replace(int32_t set, int32_t then) {
    int32_t prefix = sets_[set].prefix;
    return prefix < 0 ? then : Compose(prefix, then);
  }

  void Apply(std::string* text, int32_t set) const {
    const Set& s = sets_[set];
    if (s.prefix >= 0) Apply(text, s.prefix);
    for (uint32_t i = s.start; i < s.end; ++i) SetMarker(text, pairs[i].first, pairs[i].second);
  }

  // The text of `set` written on an empty span. Mostly each marker is just appended:
  // when no string holds a '<' (so the text holds the tags of the keys written so far
  // only) and no key is another's, or its legacy key, nothing is ever replaced.
  void Render(std::string* text, int32_t set) const {
    text->clear();
    const Pair* seq[kMaxPlain];
    size_t n = 0;
    bool plain = true;
    for (int32_t at = set; at >= 0 && plain; at = sets_[at].prefix) {
      const Set& s = sets_[at];
      plain = s.plain && n + (s.end - s.start) <= kMaxPlain;
      for (uint32_t i = s.end; i > s.start && plain; --i) seq[n++] = &pairs[i - 1];
    }
    size_t size = 0;
    for (size_t i = 0; i < n && plain; ++i) {  // (seq is in reverse order)
      std::string_view key = seq[i]->first;
      const char* legacy = Legacy(key);
      for (size_t j = i + 1; j < n && plain; ++j) {
        plain = seq[j]->first != key && (legacy == nullptr || seq[j]->first != legacy);
      }
      if (!seq[i]->second.empty()) size += 2 * key.size() + seq[i]->second.size() + 5;
    }
    if (!plain) {
      Apply(text, set);
      return;
    }
    text->resize(size);
    char* out = text->data();
    auto put = [&out](std::string_view piece) {
      std::memcpy(out, piece.data(), piece.size());
      out += piece.size();
    };
    for (size_t i = n; i > 0; --i) {
      std::string_view key = seq[i - 1]->first, value = seq[i - 1]->second;
      if (value.empty()) continue;
      *out++ = '<';
      put(key);
      *out++ = '>';
      put(value);
      *out++ = '<';
      *out++ = '/';
      put(key);
      *out++ = '>';
    }
  }

  void Reserve(size_t n_sets, size_t n_pairs) {
    sets_.reserve(n_sets);
    pairs.reserve(n_pairs);
  }

 private:
  static constexpr size_t kMaxPlain = 16;

  struct Set {
    int32_t prefix;
    uint32_t start, end;
    bool plain;  // no '<' in the strings of pairs [start, end)
  };

  int32_t Push(Set s) {
    if (sets_.size() >= static_cast<size_t>(INT32_MAX)) {
      TVM_FFI_THROW(ValueError) << "too many marker sets";
    }
    sets_.push_back(s);
    return static_cast<int32_t>(sets_.size() - 1);
  }

  std::vector<Set> sets_;
};

// A node's marker set and the (last) edit item that gave it.
struct Entry {
  int32_t set;
  int32_t layer;
};

// A var's entry and, once the rebuild met its definition, the new var its uses take
// (kept beside the entry: one table and one probe per use instead of a second map).
struct VarEntry : Entry {
  ObjectRef remap;
};

constexpr int kMaxDepth = 2000;  // nesting levels before handing the function to Python

class Rebuilder {
 public:
  Rebuilder(const Types& t, PtrMap<VarEntry>* vars, const PtrMap<Entry>& values,
            const MarkerSets& sets)
      : t_(t), vars_(*vars), values_(values), sets_(sets), bare_(sets.size()),
        bare_done_(sets.size(), false) {}

  ObjectRef Function(const ObjectRef& f) {
    DepthGuard guard(&depth_, kMaxDepth);
    Array<ObjectRef> old_params = t_.func_params.GetArray(f.get());
    Array<ObjectRef> params;
    params.reserve(old_params.size());
    for (const ObjectRef& p : old_params) params.push_back(VarDef(p));
    ObjectRef body = Expr(t_.func_body.Get(f.get()));
    ObjectRef out = t_.Copy(f);
    t_.func_params.SetRef(out.get(), params);
    t_.func_body.SetRef(out.get(), body);
    return out;
  }

 private:
  // `old` (a node's span) with marker set `set` written (span.with_markers)
  ObjectRef Span(const ObjectRef& old, int32_t set) {
    if (!old.defined()) {
      if (!bare_done_[set]) {
        sets_.Render(&text_, set);
        if (!text_.empty()) {
          bare_[set] = t_.SpanLike(t_.empty_span, text_);
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
    return t_.SpanLike(old, updated);
  }

  int32_t ValueSet(const Object* e) const {
    const Entry* got = values_.Find(e);
    return got == nullptr ? -1 : got->set;
  }

  ObjectRef Marked(const ObjectRef& e, int32_t set) {
    ObjectRef out = t_.Copy(e);
    t_.expr_span.SetRef(out.get(), Span(t_.expr_span.Get(e.get()), set));
    return out;
  }

  ObjectRef VarDef(const ObjectRef& v) {
    // (the map is ours to change: PtrMap only has a const Find)
    VarEntry* got = const_cast<VarEntry*>(vars_.Find(v.get()));
    if (got == nullptr) return v;
    got->remap = Marked(v, got->set);
    return got->remap;
  }

  ObjectRef Expr(const ObjectRef& e) {
    if (!e.defined()) return e;
    int32_t ti = e->type_index();
    if (ti == t_.var || ti == t_.dataflow_var) {
      const VarEntry* got = vars_.Find(e.get());
      return got == nullptr || !got->remap.defined() ? e : got->remap;
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
      t_.tuple_fields.SetRef(out.get(), fields);
      return out;
    }
    if (ti == t_.item) {
      ObjectRef old_tuple = t_.item_tuple.Get(e.get());
      ObjectRef tuple = Expr(old_tuple);
      int32_t set = ValueSet(e.get());
      if (set < 0 && tuple.same_as(old_tuple)) return e;
      ObjectRef out = set < 0 ? t_.Copy(e) : Marked(e, set);
      t_.item_tuple.SetRef(out.get(), tuple);
      return out;
    }
    if (ti == t_.seq) return Seq(e);
    if (ti == t_.if_) {
      DepthGuard guard(&depth_, kMaxDepth);
      ObjectRef cond = Expr(t_.if_cond.Get(e.get()));
      ObjectRef yes = Expr(t_.if_true.Get(e.get()));
      ObjectRef no = Expr(t_.if_false.Get(e.get()));
      ObjectRef out = t_.Copy(e);
      t_.if_cond.SetRef(out.get(), cond);
      t_.if_true.SetRef(out.get(), yes);
      t_.if_false.SetRef(out.get(), no);
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
    t_.call_args.SetRef(out.get(), args);
    t_.call_op.SetRef(out.get(), op);
    return out;
  }

  ObjectRef Seq(const ObjectRef& e) {
    DepthGuard guard(&depth_, kMaxDepth);
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
      t_.block_bindings.SetRef(out.get(), bindings);
      memo_.Put(block.get(), out);
      blocks.push_back(out);
    }
    ObjectRef body = Expr(t_.seq_body.Get(e.get()));
    ObjectRef out = t_.Copy(e);
    t_.seq_blocks.SetRef(out.get(), blocks);
    t_.seq_body.SetRef(out.get(), body);
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
    var_field->SetRef(out.get(), var);
    value_field->SetRef(out.get(), value);
    return out;
  }

  const Types& t_;
  PtrMap<VarEntry>& vars_;
  const PtrMap<Entry>& values_;
  const MarkerSets& sets_;
  std::string text_;  // scratch for the text of a bare span
  std::vector<ObjectRef> bare_;
  std::vector<bool> bare_done_;
  PtrMap<ObjectRef> memo_;
  int depth_ = 0;
};

// The parts of `text` separated by "\x1f" (none for an empty text).
std::vector<std::string_view> Split(std::string_view text) {
  std::vector<std::string_view> out;
  if (text.empty()) return out;
  out.reserve(std::count(text.begin(), text.end(), '\x1f') + 1);
  size_t pos = 0;
  while (true) {
    size_t end = text.find('\x1f', pos);
    out.push_back(text.substr(pos, end == std::string_view::npos ? end : end - pos));
    if (end == std::string_view::npos) return out;
    pos = end + 1;
  }
}

// A flat array of `T` (native order) viewing `bytes`.
template <typename T>
struct Flat {
  const char* data = nullptr;
  size_t size = 0;

  Flat(const Any& bytes, const char* what) {
    auto b = bytes.try_cast<ffi::Bytes>();
    if (!b.has_value()) TVM_FFI_THROW(TypeError) << what << " must be bytes";
    holder = *b;
    if (holder.size() % sizeof(T) != 0) TVM_FFI_THROW(ValueError) << "bad " << what;
    data = holder.data();
    size = holder.size() / sizeof(T);
  }

  T operator[](size_t i) const {
    T out;
    std::memcpy(&out, data + i * sizeof(T), sizeof(T));
    return out;
  }

  ffi::Bytes holder;
};

// The edits of all items: a node's entry is its set in the first item that has one,
// composed with its sets in the later items (as rewriting with each in turn would); a
// later entry for a node within one item replaces an earlier one.
class Edits {
 public:
  PtrMap<VarEntry> vars;
  PtrMap<Entry> values;
  MarkerSets sets;

  // (`n_vars`, `n_values`: how many entries the maps are sized for, see Count; they
  // grow if more come)
  Edits(size_t n_vars, size_t n_values) : vars(n_vars), values(n_values) {
    sets.Reserve(n_vars + n_values, 0);
  }

  // The number of var and of value entries of `item` (its handle arrays, fields 3 and
  // 4 of both kinds), at most.
  static std::pair<size_t, size_t> Count(const Array<Any>& item) {
    size_t n[2] = {0, 0};
    for (size_t k = 0; k < 2 && 3 + k < item.size(); ++k) {
      auto b = item[3 + k].try_cast<ffi::Bytes>();
      if (b.has_value()) n[k] = b->size() / sizeof(int64_t);
    }
    return {n[0], n[1]};
  }

  // One item, as rewrite.py's `_native_items` makes them:
  //   ["sets", text, sizes, vars, values]: marker sets and the nodes they go on. `text`
  //     holds the strings of the sets, key and value of each pair in turn, joined by
  //     "\x1f"; `sizes` the number of pairs of each set (one byte each); `vars` and
  //     `values` the handles (int64) of the vars and other nodes, which take the sets
  //     in order (vars first).
  //   ["column", key, texts, vars, values, share]: marker `key` with value texts[i]
  //     (joined by "\x1f"; "" for none) on vars[i] and on values[i] (int64 handles;
  //     either may be empty); `share`: equal texts share one set (and one span).
  void Add(const Array<Any>& item, int32_t index) {
    const ffi::String& kind = Str(item, 0, "item kind");
    if (kind == "sets" && item.size() == 5) {
      AddSets(item, index);
    } else if (kind == "column" && item.size() == 6) {
      AddColumn(item, index);
    } else {
      TVM_FFI_THROW(ValueError) << "bad edit item " << kind << " of " << item.size()
                                << " fields";
    }
  }

 private:
  // (kept in `strings_`, which the pairs view: a short ffi::String holds its text
  // inline, so a view of a temporary copy would dangle)
  const ffi::String& Str(const Array<Any>& item, size_t at, const char* what) {
    auto s = item[at].try_cast<ffi::String>();
    if (!s.has_value()) TVM_FFI_THROW(TypeError) << what << " must be a string";
    strings_.push_back(*s);
    return strings_.back();
  }

  static std::string_view View(const ffi::String& s) { return {s.data(), s.size()}; }

  template <typename E>
  void Put(PtrMap<E>* map, int64_t handle, int32_t set, int32_t item) {
    bool fresh;
    Entry* entry = map->Insert(reinterpret_cast<const Object*>(handle), &fresh);
    if (!fresh) {
      set = entry->layer == item ? sets.Replace(entry->set, set) : sets.Compose(entry->set, set);
    }
    entry->set = set;
    entry->layer = item;
  }

  void AddSets(const Array<Any>& item, int32_t index) {
    std::vector<std::string_view> parts = Split(View(Str(item, 1, "marker text")));
    auto sizes = item[2].try_cast<ffi::Bytes>();
    if (!sizes.has_value()) TVM_FFI_THROW(TypeError) << "set sizes must be bytes";
    Flat<int64_t> var_keys(item[3], "var handles");
    Flat<int64_t> value_keys(item[4], "value handles");
    if (sizes->size() != var_keys.size + value_keys.size) {
      TVM_FFI_THROW(ValueError) << "handles and marker sets differ in length";
    }
    size_t at = 0;
    for (size_t i = 0; i < sizes->size(); ++i) {
      size_t n = static_cast<uint8_t>(sizes->data()[i]);
      if (at + 2 * n > parts.size()) {
        TVM_FFI_THROW(ValueError) << "set sizes do not match the marker text";
      }
      uint32_t start = static_cast<uint32_t>(sets.pairs.size());
      for (size_t k = 0; k < n; ++k, at += 2) sets.pairs.emplace_back(parts[at], parts[at + 1]);
      if (n == 0) continue;  // no markers: as if absent
      int32_t set = sets.Add(start, static_cast<uint32_t>(sets.pairs.size()));
      if (i < var_keys.size) {
        Put(&vars, var_keys[i], set, index);
      } else {
        Put(&values, value_keys[i - var_keys.size], set, index);
      }
    }
    if (at != parts.size()) TVM_FFI_THROW(ValueError) << "set sizes do not match the marker text";
  }

  void AddColumn(const Array<Any>& item, int32_t index) {
    std::string_view key = View(Str(item, 1, "column key"));
    std::vector<std::string_view> texts = Split(View(Str(item, 2, "column texts")));
    Flat<int64_t> var_keys(item[3], "var handles");
    Flat<int64_t> value_keys(item[4], "value handles");
    auto share = item[5].try_cast<bool>();
    if (!share.has_value()) TVM_FFI_THROW(TypeError) << "share must be a bool";
    // (an empty text list and one empty text both join to "")
    if (texts.empty() && std::max(var_keys.size, value_keys.size) == 1) texts.emplace_back();
    if ((var_keys.size != 0 && var_keys.size != texts.size()) ||
        (value_keys.size != 0 && value_keys.size != texts.size())) {
      TVM_FFI_THROW(ValueError) << "handles and column texts differ in length";
    }
    std::unordered_map<std::string_view, int32_t> by_text;
    std::string_view last;
    int32_t last_set = -1;
    for (size_t i = 0; i < texts.size(); ++i) {
      std::string_view text = texts[i];
      if (text.empty()) continue;
      int32_t set;
      if (*share && last_set >= 0 && text == last) {
        set = last_set;  // (neighbours mostly share their layout)
      } else if (*share) {
        auto [it, fresh] = by_text.emplace(text, 0);
        if (fresh) it->second = NewSet(key, text);
        set = it->second;
      } else {
        set = NewSet(key, text);
      }
      last = text;
      last_set = set;
      if (var_keys.size != 0) Put(&vars, var_keys[i], set, index);
      if (value_keys.size != 0) Put(&values, value_keys[i], set, index);
    }
  }

  int32_t NewSet(std::string_view key, std::string_view value) {
    uint32_t start = static_cast<uint32_t>(sets.pairs.size());
    sets.pairs.emplace_back(key, value);
    return sets.Add(start, start + 1);
  }

  std::deque<ffi::String> strings_;  // the strings the pairs view
};

ObjectRef Rebuild(ObjectRef func, Array<Any> items) {
  const Types& t = GetTypes();
  if (func->type_index() != t.function) {
    TVM_FFI_THROW(TypeError) << "expected a relax.Function, got " << func->GetTypeKey();
  }
  std::vector<Array<Any>> parsed;
  size_t n_vars = 0, n_values = 0;
  for (const Any& item : items) {
    auto fields = item.try_cast<Array<Any>>();
    if (!fields.has_value() || fields->empty()) {
      TVM_FFI_THROW(TypeError) << "an edit item must be a non-empty list";
    }
    // Sized for the largest item, not the sum: the items of the layers mostly name the
    // same nodes (a name and a layout each), and a table twice too big costs its pages
    // at annotate's peak of memory (the rebuild); a larger union grows the table.
    auto [v, x] = Edits::Count(*fields);
    n_vars = std::max(n_vars, v);
    n_values = std::max(n_values, x);
    parsed.push_back(*fields);
  }
  Edits edits(n_vars, n_values);
  for (size_t i = 0; i < parsed.size(); ++i) edits.Add(parsed[i], static_cast<int32_t>(i));
  Rebuilder rebuilder(t, &edits.vars, edits.values, edits.sets);
  return rebuilder.Function(func);
}

int64_t Version() { return 4; }

}  // namespace

TVM_FFI_DLL_EXPORT_TYPED_FUNC(rebuild, Rebuild);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(version, Version);
