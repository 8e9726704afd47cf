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
#include <atomic>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
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

  // A set of one pair whose key is `plain_key` (has no '<') or not, `shared` by several
  // nodes or not.
  int32_t AddOne(std::string_view key, std::string_view value, bool plain_key, bool shared) {
    shared_made_ += shared;
    uint32_t start = static_cast<uint32_t>(pairs.size());
    pairs.emplace_back(key, value);
    return Push(Set{-1, start, start + 1,
                    plain_key && value.find('<') == std::string_view::npos, shared});
  }
  size_t size() const { return sets_.size(); }

  // whether `set` may be written on several nodes (see AddOne; a composite is one node's)
  bool Shared(int32_t set) const { return sets_[set].shared; }

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

  // What Drop goes back to.
  struct Mark {
    size_t sets, pairs, shared;
  };
  Mark Here() const { return {sets_.size(), pairs.size(), shared_made_}; }

  // Forget the sets made since `mark`, unless one of them may go on other nodes (the
  // others were one node's, written into its span by now).
  void Drop(const Mark& mark) {
    if (shared_made_ != mark.shared) return;
    sets_.resize(mark.sets);
    pairs.resize(mark.pairs);
  }

 private:
  static constexpr size_t kMaxPlain = 16;

  struct Set {
    int32_t prefix;
    uint32_t start, end;
    bool plain;  // no '<' in the strings of pairs [start, end)
    bool shared = false;  // (no prefix) may be written on several nodes
  };

  int32_t Push(Set s) {
    if (sets_.size() >= static_cast<size_t>(INT32_MAX)) {
      TVM_FFI_THROW(ValueError) << "too many marker sets";
    }
    sets_.push_back(s);
    return static_cast<int32_t>(sets_.size() - 1);
  }

  std::vector<Set> sets_;
  size_t shared_made_ = 0;  // sets made with `shared`
};

// A node's marker set and the (last) edit item that gave it.
struct Entry {
  int32_t set;
  int32_t layer;
};

constexpr char kSep = '\x1f';    // between the strings of an item's text

// How many times `c` occurs in `text`, eight bytes at a time (a column's text holds
// one per node).
size_t Count(std::string_view text, char c) {
  constexpr uint64_t kLow = 0x7f7f7f7f7f7f7f7full, kOnes = 0x0101010101010101ull;
  const uint64_t pattern = kOnes * static_cast<uint8_t>(c);
  size_t n = 0, i = 0;
  for (; i + 8 <= text.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, text.data() + i, 8);
    uint64_t x = w ^ pattern;  // a zero byte where `c` is
    uint64_t t = ((x & kLow) + kLow) | x;  // high bit clear exactly at the zero bytes
    n += __builtin_popcountll(~t & ~kLow);
  }
  for (; i < text.size(); ++i) n += text[i] == c;
  return n;
}

// The parts of `text` separated by kSep (none for an empty text).
std::vector<std::string_view> Split(std::string_view text) {
  std::vector<std::string_view> out;
  if (text.empty()) return out;
  out.reserve(Count(text, kSep) + 1);
  size_t pos = 0;
  while (true) {
    size_t end = text.find(kSep, pos);
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

// One edit item, checked, as rewrite.py's `_native_items` makes them:
//   ["sets", text, sizes, vars, values]: marker sets and the nodes they go on. `text`
//     holds the strings of the sets, key and value of each pair in turn, joined by
//     "\x1f"; `sizes` the number of pairs of each set (one byte each); `vars` and
//     `values` the handles (int64) of the vars and other nodes, which take the sets
//     in order (vars first).
//   ["column", key, texts, vars, values, share]: marker `key` with value texts[i]
//     (joined by "\x1f"; "" for none) on vars[i] and on values[i] (int64 handles;
//     either may be empty); `share`: equal texts share one set (and one span).
// A set of no pairs and an empty text write nothing: their node is as if absent.
class Item {
 public:
  bool column;  // (first: the kind is checked before the handles)
  Flat<int64_t> vars, values;

  Item(const Array<Any>& item, int32_t layer, MarkerSets* sets)
      : column(IsColumn(item)), vars(item[3], "var handles"), values(item[4], "value handles"),
        layer_(layer) {
    if (column) {
      key_ = View(Str(item, 1, "column key"));
      text_ = View(Str(item, 2, "column texts"));
      auto share = item[5].try_cast<bool>();
      if (!share.has_value()) TVM_FFI_THROW(TypeError) << "share must be a bool";
      share_ = *share;
      size_t n = text_.empty() ? 0 : Count(text_, kSep) + 1;
      plain_key_ = key_.find('<') == std::string_view::npos;
      // (an empty text list and one empty text both join to "")
      if (n == 0 && std::max(vars.size, values.size) == 1) n = 1;
      if ((vars.size != 0 && vars.size != n) || (values.size != 0 && values.size != n)) {
        TVM_FFI_THROW(ValueError) << "handles and column texts differ in length";
      }
    } else {
      ReadSets(item, sets);
    }
  }

  int32_t layer() const { return layer_; }

  // (columns) where the text of the entry after the one ending at `end` ends
  size_t TextEnd(size_t from) const {
    size_t at = text_.find(kSep, from);
    return at == std::string_view::npos ? text_.size() : at;
  }

  // The set of entry `index` (sets: counting the vars' first), whose text (columns) is
  // text[start, end) (not empty); -1 for a set of no pairs.
  int32_t SetOf(size_t index, size_t start, size_t end, MarkerSets* sets) {
    if (!column) return set_of_[index];
    std::string_view text = text_.substr(start, end - start);
    if (share_) {
      if (last_text_set_ < 0 || text != last_text_) {  // (neighbours mostly share theirs)
        auto it = by_text_.find(text);
        if (it == by_text_.end()) it = by_text_.emplace(text, NewSet(text, sets)).first;
        last_text_ = text;
        last_text_set_ = it->second;
      }
      return last_text_set_;
    }
    // entry i of the vars and of the values share one set, as in Edits
    if (vars.size == 0 || values.size == 0) return NewSet(text, sets);
    if (last_index_ != index) {
      last_index_ = index;
      last_set_ = NewSet(text, sets);
    }
    return last_set_;
  }

  // (sets) whether entry `index` (counting the vars' first) writes nothing
  bool NoSet(size_t index) const { return set_of_[index] < 0; }

  // Every entry in turn as `put(on_var, handle, set)` (skipping those writing nothing).
  template <typename F>
  void ForEach(MarkerSets* sets, F put) {
    if (!column) {
      for (size_t i = 0; i < set_of_.size(); ++i) {
        if (set_of_[i] < 0) continue;
        if (i < vars.size) {
          put(true, vars[i], set_of_[i]);
        } else {
          put(false, values[i - vars.size], set_of_[i]);
        }
      }
      return;
    }
    size_t n = std::max(vars.size, values.size);
    for (size_t i = 0, start = 0; i < n; ++i) {
      size_t end = TextEnd(start);
      if (end > start) {
        int32_t set = SetOf(i, start, end, sets);
        if (vars.size != 0) put(true, vars[i], set);
        if (values.size != 0) put(false, values[i], set);
      }
      start = end + 1;
    }
  }

 private:
  static bool IsColumn(const Array<Any>& item) {
    auto kind = item[0].try_cast<ffi::String>();
    if (!kind.has_value()) TVM_FFI_THROW(TypeError) << "item kind must be a string";
    if (*kind == "column" && item.size() == 6) return true;
    if (*kind == "sets" && item.size() == 5) return false;
    TVM_FFI_THROW(ValueError) << "bad edit item " << *kind << " of " << item.size() << " fields";
    TVM_FFI_UNREACHABLE();
  }

  // (kept in `strings_`, which the pairs view: a short ffi::String holds its text
  // inline, so a view of a temporary copy would dangle)
  const ffi::String& Str(const Array<Any>& item, size_t at, const char* what) {
    auto s = item[at].try_cast<ffi::String>();
    if (!s.has_value()) TVM_FFI_THROW(TypeError) << what << " must be a string";
    strings_.push_back(*s);
    return strings_.back();
  }

  static std::string_view View(const ffi::String& s) { return {s.data(), s.size()}; }

  void ReadSets(const Array<Any>& item, MarkerSets* sets) {
    std::vector<std::string_view> parts = Split(View(Str(item, 1, "marker text")));
    auto sizes = item[2].try_cast<ffi::Bytes>();
    if (!sizes.has_value()) TVM_FFI_THROW(TypeError) << "set sizes must be bytes";
    if (sizes->size() != vars.size + values.size) {
      TVM_FFI_THROW(ValueError) << "handles and marker sets differ in length";
    }
    set_of_.reserve(sizes->size());
    size_t at = 0;
    for (size_t i = 0; i < sizes->size(); ++i) {
      size_t n = static_cast<uint8_t>(sizes->data()[i]);
      if (at + 2 * n > parts.size()) {
        TVM_FFI_THROW(ValueError) << "set sizes do not match the marker text";
      }
      uint32_t start = static_cast<uint32_t>(sets->pairs.size());
      for (size_t k = 0; k < n; ++k, at += 2) sets->pairs.emplace_back(parts[at], parts[at + 1]);
      set_of_.push_back(n == 0 ? -1 : sets->Add(start, static_cast<uint32_t>(sets->pairs.size())));
    }
    if (at != parts.size()) TVM_FFI_THROW(ValueError) << "set sizes do not match the marker text";
  }

  int32_t NewSet(std::string_view value, MarkerSets* sets) const {
    // (a set of a column not shared goes on the var and the value of one entry)
    return sets->AddOne(key_, value, plain_key_,
                        share_ || (vars.size != 0 && values.size != 0));
  }

  int32_t layer_;
  std::string_view key_, text_;
  bool share_ = false, plain_key_ = false;
  std::vector<int32_t> set_of_;  // (sets) per entry, vars first; -1: writes nothing
  std::unordered_map<std::string_view, int32_t> by_text_;
  std::string_view last_text_;
  int32_t last_text_set_ = -1;
  size_t last_index_ = SIZE_MAX;  // (not shared) the entry of last_set_
  int32_t last_set_ = -1;
  std::deque<ffi::String> strings_;  // the strings the pairs view
};

// The entries of one item on vars or on values, read in their order with a cursor: the
// callers list the nodes in the order the rebuild meets them (naming and the read walk
// the function as it does), so the next entry is the node met, or the node met has
// none. A node met out of that order leaves its entry unread, and `Done` says so.
class Cursor {
 public:
  Cursor(Item* item, bool on_vars)
      : item_(item), keys_(on_vars ? &item->vars : &item->values),
        offset_(on_vars ? 0 : item->vars.size) {
    if (item_->column) end_ = item_->TextEnd(0);
    SkipEmpty();
  }

  bool Done() const { return at_ >= keys_->size; }
  const Item& item() const { return *item_; }

  // The set `node` takes from this item if it is the next entry (read then), else -1. A
  // node listed again right after takes its later set, as in Edits.
  int32_t Take(const Object* node, MarkerSets* sets) {
    if (at_ >= keys_->size || Key() != node) return -1;
    int32_t set = -1;
    do {
      if (!Empty()) set = item_->SetOf(offset_ + at_, start_, end_, sets);
      Next();
    } while (at_ < keys_->size && Key() == node);
    SkipEmpty();
    return set;
  }

 private:
  const Object* Key() const { return reinterpret_cast<const Object*>((*keys_)[at_]); }

  bool Empty() const { return item_->column ? start_ == end_ : item_->NoSet(offset_ + at_); }

  void Next() {
    if (++at_ < keys_->size && item_->column) {
      start_ = end_ + 1;
      end_ = item_->TextEnd(start_);
    }
  }

  void SkipEmpty() {
    while (at_ < keys_->size && Empty()) Next();
  }

  Item* item_;
  const Flat<int64_t>* keys_;
  size_t offset_;  // (sets) of the first entry among the item's sets
  size_t at_ = 0;
  size_t start_ = 0, end_ = 0;  // (columns) the text of entry `at_`
};

// The marker set of each node the rebuild meets: a node's entry is its set in the first
// item that has one, composed with its sets in the later items (as rewriting with each
// in turn would); a later entry for a node within one item replaces an earlier one.
//
// Read by cursors in the order the rebuild meets the nodes (`ordered`): no table keyed
// by node address, whose random probes miss the caches on a large module, twice per
// node (to fill it, to read it). If some node was met out of the items' order (`Done`
// false at the end), the rebuild is made again from hash tables of all entries.
class Entries {
 public:
  Entries(std::deque<Item>* items, MarkerSets* sets, bool ordered) : sets_(sets) {
    if (ordered) {
      for (Item& item : *items) {
        if (item.vars.size != 0) vars_.emplace_back(&item, true);
        if (item.values.size != 0) values_.emplace_back(&item, false);
      }
      return;
    }
    // Sized for the largest item, not the sum: the items of the layers mostly name the
    // same nodes (a name and a layout each); a larger union grows the table.
    size_t n_vars = 0, n_values = 0;
    for (const Item& item : *items) {
      n_vars = std::max(n_vars, item.vars.size);
      n_values = std::max(n_values, item.values.size);
    }
    by_var_ = std::make_unique<PtrMap<Entry>>(n_vars);
    by_value_ = std::make_unique<PtrMap<Entry>>(n_values);
    for (Item& item : *items) {
      item.ForEach(sets, [&](bool on_var, int64_t handle, int32_t set) {
        Put(on_var ? by_var_.get() : by_value_.get(), handle, set, item.layer());
      });
    }
  }

  int32_t Var(const Object* node) { return by_var_ ? Find(*by_var_, node) : Take(&vars_, node); }
  int32_t Value(const Object* node) {
    return by_value_ ? Find(*by_value_, node) : Take(&values_, node);
  }

  // Whether every entry was read (always, from the tables).
  bool Done() const {
    for (const auto* cursors : {&vars_, &values_}) {
      for (const Cursor& c : *cursors) {
        if (!c.Done()) return false;
      }
    }
    return true;
  }

 private:
  int32_t Take(std::vector<Cursor>* cursors, const Object* node) {
    int32_t set = -1;
    for (Cursor& c : *cursors) {  // (in the items' order)
      int32_t got = c.Take(node, sets_);
      if (got >= 0) set = set < 0 ? got : sets_->Compose(set, got);
    }
    return set;
  }

  static int32_t Find(const PtrMap<Entry>& map, const Object* node) {
    const Entry* got = map.Find(node);
    return got == nullptr ? -1 : got->set;
  }

  void Put(PtrMap<Entry>* map, int64_t handle, int32_t set, int32_t layer) {
    bool fresh;
    Entry* entry = map->Insert(reinterpret_cast<const Object*>(handle), &fresh);
    if (!fresh) {
      set = entry->layer == layer ? sets_->Replace(entry->set, set)
                                  : sets_->Compose(entry->set, set);
    }
    entry->set = set;
    entry->layer = layer;
  }

  MarkerSets* sets_;
  std::vector<Cursor> vars_, values_;
  std::unique_ptr<PtrMap<Entry>> by_var_, by_value_;
};

// The new var of each var whose definition the rebuild marked, for its uses. Most uses
// follow their definition closely, so a small direct-mapped table (in cache) holds the
// recent definitions, and a hash table those pushed out while uses remain. A var's
// references besides its definition bound its uses: the rebuild expands every node it
// reaches once (a node referenced more than once is memoised), so each reference is
// met once at most; an entry whose uses are all met frees its slot.
class Remap {
 public:
  struct Slot {
    const Object* old = nullptr;
    const Object* now = nullptr;  // (the new binding or params keep it alive)
    int32_t set = -1;
    uint32_t left = 0;  // uses still to come, at most
  };

  // (`defs`: about how many vars will be defined; a small function gets a small table)
  explicit Remap(size_t defs) {
    int bits = 6;
    while ((size_t{1} << bits) < kRecent && (size_t{1} << bits) < 2 * defs) ++bits;
    recent_.resize(size_t{1} << bits);
    shift_ = 64 - bits;
  }

  // `old` defined as `now` with marker set `set`, `uses` uses to come at most
  void Put(const Object* old, const Object* now, int32_t set, uint64_t uses) {
    if (uses == 0) return;
    Slot& s = recent_[Hash(old)];
    if (s.old != nullptr && s.old != old) older_.Put(s.old, s);
    s = Slot{old, now, set, static_cast<uint32_t>(std::min<uint64_t>(uses, UINT32_MAX))};
  }

  // The new var of `old` (nullptr if it has none), counting one use.
  const Object* Use(const Object* old) {
    Slot& s = recent_[Hash(old)];
    if (s.old == old) {
      const Object* now = s.now;
      if (--s.left == 0) s.old = nullptr;
      return now;
    }
    if (older_.size() == 0) return nullptr;
    const Slot* got = older_.Find(old);
    return got == nullptr ? nullptr : got->now;
  }

  // The entry of `old` (a var defined again: malformed, but as the hash tables had it).
  const Slot* Find(const Object* old) const {
    const Slot& s = recent_[Hash(old)];
    if (s.old == old) return &s;
    return older_.size() == 0 ? nullptr : older_.Find(old);
  }

 private:
  static constexpr size_t kRecent = 2048;

  size_t Hash(const Object* p) const {  // (the top bits of a multiplicative hash)
    return static_cast<size_t>(((reinterpret_cast<uint64_t>(p) >> 4) * 0x9E3779B97F4A7C15ull) >>
                               shift_);
  }

  std::vector<Slot> recent_;
  int shift_;
  PtrMap<Slot> older_;
};

class Rebuilder {
 public:
  Rebuilder(const Types& t, Entries* entries, MarkerSets* sets, size_t defs)
      : t_(t), entries_(*entries), sets_(*sets), remap_(defs) {}

  ObjectRef Function(const ObjectRef& f) {
    DepthGuard guard(&depth_, kMaxFunctionDepth);
    const ffi::ArrayObj* old_params = ArrayOf(t_.func_params, f.get());
    Array<ObjectRef> params;
    params.reserve(old_params->size());
    for (const Any& p : *old_params) params.push_back(VarDef(AsRef(p)));
    ObjectRef body = Expr(t_.func_body.Get(f.get()));
    ObjectRef out = t_.Copy(f);
    t_.func_params.SetRef(out.get(), params);
    t_.func_body.SetRef(out.get(), body);
    return out;
  }

 private:
  // An array field of `obj` (not counted as a reference: see Shared).
  static const ffi::ArrayObj* ArrayOf(const Field& field, const Object* obj) {
    const Object* a = field.Get(obj).get();
    if (a == nullptr || a->type_index() != ffi::TypeIndex::kTVMFFIArray) {
      TVM_FFI_THROW(RuntimeError) << "the native rebuild expected an array";
    }
    return static_cast<const ffi::ArrayObj*>(a);
  }

  static const ObjectRef& AsRef(const Any& a) {
    static const ObjectRef none;
    if (a.type_index() == ffi::TypeIndex::kTVMFFINone) return none;
    if (a.type_index() < ffi::TypeIndex::kTVMFFIStaticObjectBegin) {
      TVM_FFI_THROW(RuntimeError) << "the native rebuild expected a node";
    }
    return *reinterpret_cast<const ObjectRef*>(reinterpret_cast<const char*>(&a) +
                                               offsetof(TVMFFIAny, v_obj));
  }

  // Whether `node` is referenced more than once (by the IR, or by anyone else): such a
  // node may be met again, and its rebuild is memoised. Every other node is met once
  // (its one referrer is), which is what lets the cursors of Entries read each node's
  // entry once, and Remap count uses. (The walk takes no reference of its own to the
  // nodes it checks.)
  static bool Shared(const Object* node) { return node->use_count() > 1; }

  template <typename F>
  ObjectRef Memoised(const Object* node, F rebuild) {
    if (!Shared(node)) return rebuild();
    const ObjectRef* got = memo_.Find(node);
    if (got != nullptr) return *got;
    ObjectRef out = rebuild();
    memo_.Put(node, out);
    return out;
  }

  // `old` (a node's span) with marker set `set` written (span.with_markers)
  ObjectRef Span(const ObjectRef& old, int32_t set) {
    if (!old.defined()) {
      // nodes without a span share one per set written on several nodes
      bool shared = sets_.Shared(set);
      if (shared) {
        auto got = bare_.find(set);
        if (got != bare_.end()) return got->second;
      }
      sets_.Render(&text_, set);
      ObjectRef out;
      if (!text_.empty()) out = t_.SpanLike(t_.empty_span, text_);
      if (shared) bare_.emplace(set, out);
      return out;
    }
    ObjectRef source = t_.span_source.Get(old.get());
    std::string text;
    if (source.defined()) text = t_.source_name_name.GetAny(source.get()).cast<ffi::String>();
    std::string updated = text;
    sets_.Apply(&updated, set);
    if (updated == text) return old;
    return t_.SpanLike(old, updated);
  }

  ObjectRef Marked(const ObjectRef& e, int32_t set) {
    ObjectRef out = t_.Copy(e);
    t_.expr_span.SetRef(out.get(), Span(t_.expr_span.Get(e.get()), set));
    return out;
  }

  ObjectRef VarDef(const ObjectRef& v) {
    int32_t set = entries_.Var(v.get());
    if (set < 0) {
      const Remap::Slot* before = remap_.Find(v.get());  // (a var defined again)
      if (before == nullptr) return v;
      set = before->set;
    }
    ObjectRef out = Marked(v, set);
    // (its definition holds one reference: the others are uses, or someone else's)
    remap_.Put(v.get(), out.get(), set, v->use_count() - 1);
    return out;
  }

  ObjectRef Expr(const ObjectRef& e) {
    if (!e.defined()) return e;
    int32_t ti = e->type_index();
    if (ti == t_.var || ti == t_.dataflow_var) {
      const Object* now = remap_.Use(e.get());
      return now == nullptr ? e : ffi::GetRef<ObjectRef>(now);
    }
    if (ti == t_.call) return Memoised(e.get(), [&] { return Call(e); });
    if (ti == t_.constant || ti == t_.shape) {
      return Memoised(e.get(), [&] {
        Scratch scratch(&sets_);
        int32_t set = entries_.Value(e.get());
        return set < 0 ? e : Marked(e, set);
      });
    }
    if (ti == t_.tuple) {
      return Memoised(e.get(), [&] {
        Array<ObjectRef> fields;
        bool changed = Exprs(ArrayOf(t_.tuple_fields, e.get()), &fields);
        Scratch scratch(&sets_);
        int32_t set = entries_.Value(e.get());
        if (set < 0 && !changed) return e;
        ObjectRef out = set < 0 ? t_.Copy(e) : Marked(e, set);
        t_.tuple_fields.SetRef(out.get(), fields);
        return out;
      });
    }
    if (ti == t_.item) {
      return Memoised(e.get(), [&] {
        const ObjectRef& old_tuple = t_.item_tuple.Get(e.get());
        ObjectRef tuple = Expr(old_tuple);
        Scratch scratch(&sets_);
        int32_t set = entries_.Value(e.get());
        if (set < 0 && tuple.same_as(old_tuple)) return e;
        ObjectRef out = set < 0 ? t_.Copy(e) : Marked(e, set);
        t_.item_tuple.SetRef(out.get(), tuple);
        return out;
      });
    }
    if (ti == t_.seq) return Memoised(e.get(), [&] { return Seq(e); });
    if (ti == t_.if_) {
      return Memoised(e.get(), [&] {
        DepthGuard guard(&depth_, kMaxFunctionDepth);
        ObjectRef cond = Expr(t_.if_cond.Get(e.get()));
        ObjectRef yes = Expr(t_.if_true.Get(e.get()));
        ObjectRef no = Expr(t_.if_false.Get(e.get()));
        ObjectRef out = t_.Copy(e);
        t_.if_cond.SetRef(out.get(), cond);
        t_.if_true.SetRef(out.get(), yes);
        t_.if_false.SetRef(out.get(), no);
        return out;
      });
    }
    if (ti == t_.function) return Memoised(e.get(), [&] { return Function(e); });
    if (t_.IsLeaf(ti)) return e;
    TVM_FFI_THROW(RuntimeError) << "the native rebuild does not handle " << e->GetTypeKey();
    TVM_FFI_UNREACHABLE();
  }

  // `out` = the rebuilt `old`; whether any element changed. (An array referenced twice
  // is rebuilt once: its elements are met once, see Shared.)
  bool Exprs(const ffi::ArrayObj* old, Array<ObjectRef>* out) {
    if (!Shared(old)) return RebuildExprs(old, out);
    const ObjectRef* got = memo_.Find(old);
    if (got == nullptr) {
      RebuildExprs(old, out);
      memo_.Put(old, *out);
    } else {
      *out = Any(*got).cast<Array<ObjectRef>>();
    }
    for (size_t i = 0; i < old->size(); ++i) {
      if (!AsRef((*old)[i]).same_as((*out)[i])) return true;
    }
    return false;
  }

  bool RebuildExprs(const ffi::ArrayObj* old, Array<ObjectRef>* out) {
    out->reserve(old->size());
    bool changed = false;
    for (const Any& a : *old) {
      const ObjectRef& e = AsRef(a);
      ObjectRef n = Expr(e);
      changed = changed || !n.same_as(e);
      out->push_back(std::move(n));
    }
    return changed;
  }

  ObjectRef Call(const ObjectRef& e) {
    Array<ObjectRef> args;
    bool changed = Exprs(ArrayOf(t_.call_args, e.get()), &args);
    const ObjectRef& old_op = t_.call_op.Get(e.get());
    ObjectRef op = old_op;
    int32_t op_ti = old_op.defined() ? old_op->type_index() : -1;
    if (op_ti == t_.var || op_ti == t_.dataflow_var) op = Expr(old_op);  // a local function
    changed = changed || !op.same_as(old_op);
    Scratch scratch(&sets_);
    int32_t set = entries_.Value(e.get());
    if (set < 0 && !changed) return e;
    ObjectRef out = set < 0 ? t_.Copy(e) : Marked(e, set);
    t_.call_args.SetRef(out.get(), args);
    t_.call_op.SetRef(out.get(), op);
    return out;
  }

  ObjectRef Seq(const ObjectRef& e) {
    DepthGuard guard(&depth_, kMaxFunctionDepth);
    const ffi::ArrayObj* old_blocks = ArrayOf(t_.seq_blocks, e.get());
    Array<ObjectRef> blocks;
    blocks.reserve(old_blocks->size());
    for (const Any& item : *old_blocks) {
      const ObjectRef& block = AsRef(item);
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
      const ffi::ArrayObj* old_bindings = ArrayOf(t_.block_bindings, block.get());
      ObjectRef bindings = Memoised(old_bindings, [&] {
        Array<ObjectRef> out;
        out.reserve(old_bindings->size());
        for (int64_t i = 0; i < static_cast<int64_t>(old_bindings->size()); ++i) {
          PrefetchBindings(t_, Lookahead{&t_.expr_span, &t_.expr_span, true}, old_bindings, i);
          const ObjectRef& binding = AsRef((*old_bindings)[i]);
          out.push_back(Memoised(binding.get(), [&] { return Binding(binding); }));
        }
        return ObjectRef(out);
      });
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

  // The sets a node's lookup makes (its own, and its composite) are dropped once its
  // span is written: the walk then keeps a few sets, not several per node.
  class Scratch {
   public:
    explicit Scratch(MarkerSets* sets) : sets_(sets), mark_(sets->Here()) {}
    ~Scratch() { sets_->Drop(mark_); }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;

   private:
    MarkerSets* sets_;
    MarkerSets::Mark mark_;
  };

  const Types& t_;
  Entries& entries_;
  MarkerSets& sets_;
  Remap remap_;
  std::string text_;  // scratch for the text of a bare span
  std::unordered_map<int32_t, ObjectRef> bare_;  // per shared set, the span of a bare node
  PtrMap<ObjectRef> memo_;
  int depth_ = 0;
};

// How many rebuilds met some node out of their items' order and were made again from
// hash tables (`from_tables`: what the tests check to know which way ran).
std::atomic<int64_t> from_tables{0};

ObjectRef Rebuild(ObjectRef func, Array<Any> items) {
  const Types& t = GetTypes();
  if (func->type_index() != t.function) {
    TVM_FFI_THROW(TypeError) << "expected a relax.Function, got " << func->GetTypeKey();
  }
  MarkerSets sets;
  std::deque<Item> parsed;
  for (const Any& item : items) {
    auto fields = item.try_cast<Array<Any>>();
    if (!fields.has_value() || fields->empty()) {
      TVM_FFI_THROW(TypeError) << "an edit item must be a non-empty list";
    }
    parsed.emplace_back(*fields, static_cast<int32_t>(parsed.size()), &sets);
  }
  size_t defs = 0;  // (the vars with an entry, in the largest item)
  for (const Item& item : parsed) defs = std::max(defs, item.vars.size);
  {
    Entries ordered(&parsed, &sets, true);
    ObjectRef out = Rebuilder(t, &ordered, &sets, defs).Function(func);
    if (ordered.Done()) return out;
  }
  // some entry was not met in the items' order (or not met at all): from tables, then
  from_tables.fetch_add(1, std::memory_order_relaxed);
  Entries hashed(&parsed, &sets, false);
  return Rebuilder(t, &hashed, &sets, defs).Function(func);
}

int64_t Version() { return 4; }

int64_t FromTables() { return from_tables.load(std::memory_order_relaxed); }

}  // namespace

TVM_FFI_DLL_EXPORT_TYPED_FUNC(rebuild, Rebuild);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(version, Version);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(rebuild_from_tables, FromTables);
