// The native naming walk of msc_rules: the names (and SharedRef markers) of every Call,
// Constant, Tuple, TupleGetItem and ShapeExpr of the entry function and the functions
// it calls, planned in one walk and one resolution.
//
// It mirrors `_Namer` and `_Resolver` of msc_rules/naming.py step for step: the same
// slots in the same order, the same claims in the same rounds, so the same names. What
// Python decides by class (naming.py's tags, `type(op) is Op`, GlobalVar, ExternFunc)
// comes from the `classify` callback once per type, and what the rule files say (base
// names, roles, view ops, plugins) from the `ask` callback once per op or symbol, so
// naming.py stays the one place that knows either. Anything it does not know raises,
// and naming.py plans the whole module in Python instead: never a silently wrong name.
//
// Output: [names (bytes: the names in slot order, joined by \x1f), handles (bytes, int64:
// the node of each slot), refs (bytes, int32: (slot, slot whose name is its SharedRef)
// pairs), tops (array of global function names), changes (array of bytes, int32: per
// top, (slot, what to write: 1 Name, 2 SharedRef, 3 both) pairs)].
//
// `read_and_name` plans the names along with read.cc's read of the entry function (for
// annotate): one walk over the module's nodes where there were two. Its output:
// [plan_names' output or the text of its error, read's output or the text of its
// error].

#include <tvm/ffi/any.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/object.h>
#include <tvm/ffi/optional.h>
#include <tvm/ffi/string.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common.h"
#include "read.h"

namespace {

using namespace msc_rules;  // NOLINT(build/namespaces): this file's own helpers

// naming.py's node tags (`_T_*`; names go on tags below kTSeq) and the flags the
// classify callback adds to them
enum Tag : int32_t { kTCall, kTConst, kTTuple, kTShape, kTItem, kTSeq, kTIf, kTFunc, kTVar,
                     kTOther };
constexpr int32_t kTagMask = 15, kIsOp = 16, kIsGlobalVar = 32, kIsExtern = 64;
// slot kinds and resolution states (naming.py's)
enum Kind : int8_t { kCall, kFCall, kConst, kTuple, kShape, kItem };
enum State : int8_t { kTodo, kBusy, kDone };
constexpr int32_t kNone = -1;  // no role, no slot, no tuple field
constexpr int kMaxDepth = 4000;  // nesting levels before handing the module to Python

struct NameTypes : RelaxNodes {
  Field expr_span, span_source, source_text, var_name, item_index, op_name, gv_name,
      extern_symbol, func_attrs, dict_attrs, mod_functions;

  NameTypes()
      : expr_span("ir.Expr", "span"),
        span_source("ir.Span", "source_name"),
        source_text("ir.SourceName", "name", false),
        var_name("ir.Var", "name", false),
        item_index("ir.TupleGetItem", "index", false),
        op_name("ir.Op", "name", false),
        gv_name("ir.GlobalVar", "name_hint", false),
        extern_symbol("relax.expr.ExternFunc", "global_symbol", false),
        func_attrs("ir.BaseFunc", "attrs"),
        dict_attrs("ir.DictAttrs", "__dict__"),
        mod_functions("ir.IRModule", "functions") {}
};

const NameTypes& GetNameTypes() {
  static NameTypes types;
  return types;
}

// argument roles as the rule files give them: None, or a string id per position
struct Roles {
  bool none = true;
  std::vector<int32_t> ids;
};

struct Slot {
  const Object* node = nullptr;
  int8_t kind = kCall, state = kTodo;
  bool bound = false, old_current = true, shared_old_current = true;
  int32_t base = 0, top = 0;
  int32_t consumer = kNone, role = kNone, sub = kNone, view_consumer = kNone,
          view_role = kNone;
  int32_t src = kNone, view_const = kNone, src_name = 0, shared = kNone, anchor = kNone;
  int64_t index = 0;
  const Object* view_arg = nullptr;
  // texts (ids in the string table, 0 for ""): the name in the span, the name to claim
  // in round 1, the SharedRef in the span
  int32_t old = 0, fixed = 0, shared_old = 0;
  int32_t name = kNone;  // the name: its id in the set of names taken
};

// The names taken: their texts back to back in one arena, found through an open
// addressing table of ids (no node nor heap string per name, as a set of strings
// would allocate: names are most of what the walk makes).
class NameSet {
 public:
  NameSet() { Rehash(64); }

  void Reserve(size_t n) {
    if (n * 2 > table_.size()) Rehash(n * 2);
    start_.reserve(n + 1);
    hash_.reserve(n);
    arena_.reserve(n * 16);
  }

  size_t size() const { return hash_.size(); }

  std::string_view Text(int32_t id) const {
    return std::string_view(arena_).substr(start_[id], start_[id + 1] - start_[id]);
  }

  // the id of `text`, added if absent (`fresh` says which); `text` must not point into
  // the arena when it is absent
  int32_t Insert(std::string_view text, bool* fresh) {
    uint64_t h = Hash(text);
    size_t i = static_cast<size_t>(h) & mask_;
    for (;; i = (i + 1) & mask_) {
      int32_t id = table_[i];
      if (id == kNone) break;
      if (hash_[id] == h && Text(id) == text) {
        *fresh = false;
        return id;
      }
    }
    *fresh = true;
    int32_t id = static_cast<int32_t>(hash_.size());
    table_[i] = id;
    hash_.push_back(h);
    arena_.append(text);
    start_.push_back(static_cast<uint32_t>(arena_.size()));
    if (hash_.size() * 2 > table_.size()) Rehash(table_.size() * 2);
    return id;
  }

  const std::string& arena() const { return arena_; }

 private:
  static uint64_t Hash(std::string_view text) {
    constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;
    uint64_t h = text.size() * kMul;
    size_t i = 0;
    for (; i + 8 <= text.size(); i += 8) {
      uint64_t w;
      std::memcpy(&w, text.data() + i, 8);
      h = (h ^ w) * kMul;
      h ^= h >> 32;
    }
    uint64_t w = 0;
    if (i < text.size()) std::memcpy(&w, text.data() + i, text.size() - i);
    h = (h ^ w) * kMul;
    return h ^ (h >> 29);
  }

  void Rehash(size_t capacity) {
    size_t cap = 64;
    while (cap < capacity) cap <<= 1;
    table_.assign(cap, kNone);
    mask_ = cap - 1;
    for (size_t id = 0; id < hash_.size(); ++id) {
      size_t i = static_cast<size_t>(hash_[id]) & mask_;
      while (table_[i] != kNone) i = (i + 1) & mask_;
      table_[i] = static_cast<int32_t>(id);
    }
  }

  std::string arena_;
  std::vector<uint32_t> start_{0};
  std::vector<uint64_t> hash_;
  std::vector<int32_t> table_;
  size_t mask_ = 0;
};

struct Func {
  std::string name;
  std::vector<const Object*> params;
  int32_t anchor = kNone, first = kNone;
  int32_t unique = 0;  // a text id (0 for none)
  std::string composite;
};

// the marker `key` (or its legacy spelling) in span text, as span.py reads it: the text
// between the first `<key>` and the first `</key>` after it; `current` is false when
// only the legacy key holds a non-empty value (naming.py's `_marker_in`)
bool FindMarker(const std::string& text, const char* key, std::string* value) {
  std::string open = std::string("<") + key + ">", close = std::string("</") + key + ">";
  size_t p = text.find(open);
  if (p == std::string::npos) return false;
  size_t q = text.find(close, p + open.size());
  if (q == std::string::npos) return false;
  *value = text.substr(p + open.size(), q - p - open.size());
  return true;
}

void MarkerIn(const std::string& text, const char* key, const char* legacy, std::string* value,
              bool* current) {
  value->clear();
  *current = true;
  if (text.find('<') == std::string::npos) return;
  if (FindMarker(text, key, value)) return;
  if (FindMarker(text, legacy, value)) *current = value->empty();
}

class Namer {
 public:
  Namer(const NameTypes& t, const ObjectRef& mod, std::string target,
        const std::unordered_map<std::string, std::string>& wishes, ffi::Function classify,
        ffi::Function ask)
      : t_(t),
        functions_(Any(t.mod_functions.Get(mod.get())).cast<ffi::Map<ObjectRef, ObjectRef>>()),
        target_(std::move(target)),
        classify_(std::move(classify)),
        ask_(std::move(ask)) {
    Str("");
    const_ = Str("const");
    tuple_ = Str("tuple");
    shape_ = Str("shape");
    call_ = Str("call");
    for (const auto& [var, wish] : wishes) wishes_[var] = Keep(wish);
  }

  void Run(const ObjectRef& entry) {
    Reserve(entry);
    GlobalFunction(entry);
    Resolve();
  }

  // Run with the bindings of the entry function's top-level blocks handed in by a walk
  // that goes along (ReadAndName): Begin, Step on each in order, then Finish, which
  // walks those not handed in. False from Begin (nothing done) when the entry function
  // has no SeqExpr body to step through: Run then.
  bool Begin(const ObjectRef& entry) {
    ObjectRef func = FunctionOf(entry);
    if ((Tag(func) & kTagMask) != kTFunc) return false;
    const ObjectRef& body = t_.func_body.Get(func.get());
    if ((Tag(body) & kTagMask) != kTSeq) return false;
    Reserve(entry);
    std::string name(t_.gv_name.GetAny(entry.get()).cast<ffi::String>());
    saved_top_ = top_;
    top_ = TopId(name);
    depth_ += 2;  // the levels of WalkFunction and of Visit(body), as in Run
    EnterFunction(&name, nullptr, name, func);
    entry_body_ = body;
    return true;
  }

  void Step(const ObjectRef& binding) {
    Binding(binding);
    ++stepped_;
  }

  void Finish() {
    Seq(entry_body_, stepped_);
    stack_.pop_back();
    depth_ -= 2;
    top_ = saved_top_;
    Resolve();
  }

  Array<Any> Output() const {
    // (the separator joins the names; naming.py passes the text on to the rebuild as
    // it is, which takes no NUL)
    if (names_.arena().find_first_of(std::string_view("\0\x1f", 2)) != std::string::npos) {
      TVM_FFI_THROW(ValueError) << "a name holds a NUL or unit separator character";
    }
    std::string blob;
    blob.reserve(names_.arena().size() + 2 * slots_.size());
    std::vector<int64_t> handles;
    handles.reserve(slots_.size());
    for (size_t i = 0; i < slots_.size(); ++i) {
      const Slot& s = slots_[i];
      if (i) blob.push_back('\x1f');
      blob.append(names_.Text(s.name));
      handles.push_back(reinterpret_cast<int64_t>(s.node));
    }
    std::vector<int32_t> refs;
    std::vector<std::vector<int32_t>> changes;
    std::vector<int32_t> change_of(top_names_.size(), kNone);
    Array<ffi::String> tops;
    for (size_t i = 0; i < slots_.size(); ++i) {
      const Slot& s = slots_[i];
      bool has_ref = false;
      std::string_view ref;
      if (s.shared != kNone && slots_[s.shared].consumer != kNone) {
        int32_t r = slots_[s.shared].consumer;
        refs.push_back(static_cast<int32_t>(i));
        refs.push_back(r);
        has_ref = true;
        ref = names_.Text(slots_[r].name);
      }
      std::string_view name = names_.Text(s.name);
      bool name_changes = name != strs_[s.old] || !s.old_current;
      bool ref_changes = has_ref && !ref.empty() &&
                         !(ref == strs_[s.shared_old] && s.shared_old_current);
      if (!name_changes && !ref_changes) continue;
      // (an empty name is not written, but its function still gets its edits)
      int32_t what = (name_changes && !name.empty() ? 1 : 0) | (ref_changes ? 2 : 0);
      auto add = [&](int32_t top) {
        if (change_of[top] == kNone) {
          change_of[top] = static_cast<int32_t>(changes.size());
          changes.emplace_back();
          tops.push_back(ffi::String(top_names_[top]));
        }
        if (what) {
          changes[change_of[top]].push_back(static_cast<int32_t>(i));
          changes[change_of[top]].push_back(what);
        }
      };
      add(s.top);
      if (!extra_tops_.empty()) {  // (a node reached from several global functions)
        auto extra = extra_tops_.find(static_cast<int32_t>(i));
        if (extra != extra_tops_.end()) {
          for (int32_t top : extra->second) add(top);
        }
      }
    }
    Array<Any> per_top;
    for (const auto& c : changes) per_top.push_back(ToBytes(c));
    return Array<Any>{ffi::Bytes(blob.data(), blob.size()), ToBytes(handles), ToBytes(refs),
                      tops, per_top};
  }

 private:
  // room for the entry function's nodes up front (most of a module's): no map regrows
  // and rehashes every node while the walk runs
  void Reserve(const ObjectRef& entry) {
    auto it = functions_.find(entry);
    if (it == functions_.end() || (Tag((*it).second) & kTagMask) != kTFunc) return;
    const ObjectRef& body = t_.func_body.Get((*it).second.get());
    if ((Tag(body) & kTagMask) != kTSeq) return;
    size_t n = 0;
    for (const ObjectRef& block : t_.seq_blocks.GetArray(body.get())) {
      n += t_.block_bindings.GetArray(block.get()).size();
    }
    slots_.reserve(n * 2);
    slot_of_ = PtrMap<int32_t>(n * 2);
    var_slot_ = PtrMap<int32_t>(n);
  }

  // an interned string (base names, roles) and its id
  int32_t Str(const std::string& s) {
    auto [it, fresh] = str_ids_.emplace(s, static_cast<int32_t>(strs_.size()));
    if (fresh) strs_.push_back(s);
    return it->second;
  }

  // a text kept as it is (an old name, a wish): its id, 0 for ""
  int32_t Keep(std::string s) {
    if (s.empty()) return 0;
    strs_.push_back(std::move(s));
    return static_cast<int32_t>(strs_.size()) - 1;
  }

  // naming.py's tag of the node's class, with the flags of the classes call() tests
  int32_t Tag(const ObjectRef& e) {
    if (!e.defined()) return kTOther;
    size_t ti = static_cast<size_t>(e->type_index());
    if (ti < tags_.size() && tags_[ti] >= 0) return tags_[ti];
    int32_t tag = static_cast<int32_t>(classify_(e).cast<int64_t>());
    if (ti >= tags_.size()) tags_.resize(ti + 1, -1);
    tags_[ti] = tag;
    return tag;
  }

  std::string VarName(const ObjectRef& var) const {
    return std::string(t_.var_name.GetAny(var.get()).cast<ffi::String>());
  }

  // the span text of a node ("" if none)
  std::string Text(const ObjectRef& e) const {
    const ObjectRef& sp = t_.expr_span.Get(e.get());
    if (!sp.defined()) return std::string();
    const ObjectRef& source = t_.span_source.Get(sp.get());
    if (!source.defined()) return std::string();
    return std::string(t_.source_text.GetAny(source.get()).cast<ffi::String>());
  }

  // a function's attribute `key` as naming.py's `_attr` reads it (strings only here)
  std::string Attr(const ObjectRef& func, const char* key) const {
    const ObjectRef& attrs = t_.func_attrs.Get(func.get());
    if (!attrs.defined()) return std::string();
    auto dict = Any(t_.dict_attrs.Get(attrs.get())).cast<ffi::Map<ffi::String, Any>>();
    auto it = dict.find(ffi::String(key));
    if (it == dict.end()) return std::string();
    auto text = (*it).second.as<ffi::String>();
    if (!text.has_value()) {
      TVM_FFI_THROW(RuntimeError) << "the native naming reads string attributes only";
    }
    return std::string(*text);
  }

  Roles ToRoles(const Any& got) {
    Roles out;
    if (got == nullptr) return out;
    out.none = false;
    for (const ffi::String& r : got.cast<Array<ffi::String>>()) {
      out.ids.push_back(Str(std::string(r)));
    }
    return out;
  }

  // -- what the rules say, asked once per op, symbol or op name
  struct OpInfo {
    int32_t base;
    Roles roles;
    bool view, packed;
  };

  const OpInfo& OpInfoOf(const ObjectRef& op) {
    const int32_t* known = op_info_of_.Find(op.get());
    if (known != nullptr) return op_infos_[*known];
    ffi::String name = t_.op_name.GetAny(op.get()).cast<ffi::String>();
    auto got = ask_(0, name).cast<Array<Any>>();
    if (got.size() != 4) TVM_FFI_THROW(ValueError) << "bad op info";
    OpInfo info{Str(std::string(got[0].cast<ffi::String>())), ToRoles(got[1]),
                got[2].cast<bool>(), got[3].cast<bool>()};
    op_info_of_.Put(op.get(), static_cast<int32_t>(op_infos_.size()));
    op_infos_.push_back(std::move(info));
    return op_infos_.back();
  }

  const Roles& Asked(int kind, const std::string& name,
                     std::unordered_map<std::string, Roles>* cache) {
    auto it = cache->find(name);
    if (it != cache->end()) return it->second;
    Roles r = ToRoles(ask_(kind, ffi::String(name)));
    return cache->emplace(name, std::move(r)).first->second;
  }

  // -- slots
  int32_t NewSlot(const ObjectRef& e, Kind kind, int32_t base) {
    int32_t idx = static_cast<int32_t>(slots_.size());
    slots_.emplace_back();
    Slot& s = slots_.back();
    s.node = e.get();
    s.kind = kind;
    s.base = base;
    s.top = top_;
    std::string text = Text(e);
    if (!text.empty()) {
      std::string value;
      MarkerIn(text, "Name", "name", &value, &s.old_current);
      s.old = s.fixed = Keep(std::move(value));
      if (kind == kCall || kind == kFCall) {
        MarkerIn(text, "SharedRef", "master", &value, &s.shared_old_current);
        s.shared_old = Keep(std::move(value));
      }
    }
    slot_of_.Put(e.get(), idx);
    return idx;
  }

  void AddTop(int32_t s) {
    if (slots_[s].top == top_) return;
    std::vector<int32_t>& extra = extra_tops_[s];
    for (int32_t t : extra) {
      if (t == top_) return;
    }
    extra.push_back(top_);
  }

  int32_t TopId(const std::string& name) {
    auto [it, fresh] = top_ids_.emplace(name, static_cast<int32_t>(top_names_.size()));
    if (fresh) top_names_.push_back(name);
    return it->second;
  }

  // -- functions
  void WalkFunction(const std::string* global, const Object* key, std::string name,
                    const ObjectRef& func) {
    DepthGuard guard(&depth_, kMaxDepth);
    EnterFunction(global, key, std::move(name), func);
    Visit(t_.func_body.Get(func.get()));
    stack_.pop_back();
  }

  // a function's record, pushed on the stack of those being walked
  void EnterFunction(const std::string* global, const Object* key, std::string name,
                     const ObjectRef& func) {
    Func info;
    info.name = std::move(name);
    for (const ObjectRef& p : t_.func_params.GetArray(func.get())) info.params.push_back(p.get());
    info.unique = Keep(Attr(func, "Unique"));
    info.composite = Attr(func, "Composite");
    int32_t idx = static_cast<int32_t>(funcs_.size());
    for (const Object* p : info.params) var_param_.Put(p, p);
    funcs_.push_back(std::move(info));
    if (global != nullptr) {
      global_funcs_[*global] = idx;
    } else {
      local_funcs_.Put(key, idx);
    }
    stack_.push_back(idx);
  }

  // the function `gv` names in the module
  ObjectRef FunctionOf(const ObjectRef& gv) const {
    auto it = functions_.find(gv);
    if (it == functions_.end()) {
      TVM_FFI_THROW(RuntimeError) << "a call of a global var not in the module";
    }
    return (*it).second;
  }

  int32_t GlobalFunction(const ObjectRef& gv) {
    std::string name(t_.gv_name.GetAny(gv.get()).cast<ffi::String>());
    auto known = global_funcs_.find(name);
    if (known != global_funcs_.end()) return known->second;
    ObjectRef func = FunctionOf(gv);
    if ((Tag(func) & kTagMask) != kTFunc) return kNone;
    int32_t saved = top_;
    top_ = TopId(name);
    WalkFunction(&name, nullptr, name, func);
    top_ = saved;
    return global_funcs_[name];
  }

  // (the first `skip` bindings walked already: Step)
  void Seq(const ObjectRef& e, size_t skip = 0) {
    for (const ObjectRef& block : t_.seq_blocks.GetArray(e.get())) {
      for (const ObjectRef& b : t_.block_bindings.GetArray(block.get())) {
        if (skip > 0) {
          --skip;
        } else {
          Binding(b);
        }
      }
    }
    Visit(t_.seq_body.Get(e.get()));
  }

  void Binding(const ObjectRef& b) {
    int32_t bti = b->type_index();
    const ObjectRef* value;
    if (DerivesFrom(bti, t_.match_cast)) {
      value = &t_.match_cast_value.Get(b.get());
    } else if (DerivesFrom(bti, t_.var_binding)) {
      value = &t_.binding_value.Get(b.get());
    } else {
      TVM_FFI_THROW(RuntimeError) << "the native naming does not handle " << b->GetTypeKey();
    }
    const ObjectRef& var = t_.binding_var.Get(b.get());
    int32_t tag = Tag(*value) & kTagMask;
    if (tag == kTFunc) {
      std::string outer = stack_.empty() ? "" : funcs_[stack_.back()].name + ".";
      WalkFunction(nullptr, var.get(), outer + VarName(var), *value);
      return;
    }
    const Object* h = var.get();
    if (tag == kTVar) {  // an alias: the var is whatever it aliases
      const Object* src = value->get();
      if (const int32_t* s = var_slot_.Find(src)) var_slot_.Put(h, *s);
      if (const int32_t* c = var_const_.Find(src)) var_const_.Put(h, *c);
      if (const Object* const* p = var_param_.Find(src)) var_param_.Put(h, *p);
      return;
    }
    int32_t s = Visit(*value);
    if (s == kNone) return;
    var_slot_.Put(h, s);
    slots_[s].bound = true;
    if (!wishes_.empty()) {
      auto wish = wishes_.find(VarName(var));
      if (wish != wishes_.end() && wish->second != 0) slots_[s].fixed = wish->second;
    }
    const Slot& slot = slots_[s];
    if (slot.kind == kConst) {
      var_const_.Put(h, s);
    } else if (slot.view_const != kNone) {
      var_const_.Put(h, slot.view_const);
    } else if (slot.view_arg != nullptr) {
      // a view of a parameter: its consumer's role is the param's
      if (const Object* const* p = var_param_.Find(slot.view_arg)) var_param_.Put(h, *p);
    }
  }

  // -- expressions
  int32_t Visit(const ObjectRef& e) {
    DepthGuard guard(&depth_, kMaxDepth);
    int32_t tag = Tag(e) & kTagMask;
    if (tag < kTSeq) {  // a node that gets a name
      const int32_t* known = slot_of_.Find(e.get());
      if (known != nullptr) {
        AddTop(*known);
        return *known;
      }
      switch (tag) {
        case kTCall:
          return Call(e);
        case kTConst:
          return NewSlot(e, kConst, const_);
        case kTTuple:
          for (const ObjectRef& f : t_.tuple_fields.GetArray(e.get())) Visit(f);
          return NewSlot(e, kTuple, tuple_);
        case kTShape:
          return NewSlot(e, kShape, shape_);
        default:
          return Item(e);
      }
    }
    if (tag == kTSeq) {
      Seq(e);
    } else if (tag == kTIf) {
      Visit(t_.if_cond.Get(e.get()));
      Visit(t_.if_true.Get(e.get()));
      Visit(t_.if_false.Get(e.get()));
    } else if (tag == kTFunc) {
      WalkFunction(nullptr, e.get(), "<lambda>", e);
    }
    return kNone;
  }

  int32_t Item(const ObjectRef& e) {
    const ObjectRef& tv = t_.item_tuple.Get(e.get());
    bool is_var = (Tag(tv) & kTagMask) == kTVar;
    int32_t src = kNone;
    if (is_var) {
      if (const int32_t* s = var_slot_.Find(tv.get())) src = *s;
    } else {
      src = Visit(tv);
    }
    int32_t idx = NewSlot(e, kItem, 0);
    Slot& s = slots_[idx];
    s.index = t_.item_index.GetAny(e.get()).cast<int64_t>();
    s.src = src;
    if (src == kNone) s.src_name = is_var ? Str(VarName(tv)) : tuple_;
    return idx;
  }

  int32_t Call(const ObjectRef& e) {
    Array<ObjectRef> args = t_.call_args.GetArray(e.get());
    for (const ObjectRef& a : args) Visit(a);
    const ObjectRef& op = t_.call_op.Get(e.get());
    int32_t op_tag = Tag(op);
    static const Roles kNoRoles;
    // (points into op_infos_, which grows no more during this call, or at callee_roles)
    const Roles* roles = &kNoRoles;
    Roles callee_roles;
    const Roles* packed_roles = nullptr;
    bool is_view = false;
    int32_t callee = kNone, base;
    if (op_tag & kIsOp) {
      const OpInfo& info = OpInfoOf(op);
      base = info.base;
      roles = &info.roles;
      is_view = info.view;
      if (info.packed && !args.empty() && (Tag(args[0]) & kIsExtern)) {
        std::string sym(t_.extern_symbol.GetAny(args[0].get()).cast<ffi::String>());
        size_t dot = sym.rfind('.');
        std::string last = dot == std::string::npos ? sym : sym.substr(dot + 1);
        if (!last.empty()) base = Str(last);
        const Roles& plugin = Asked(1, sym, &plugin_roles_);
        if (!plugin.none) packed_roles = &plugin;
      }
    } else if (op_tag & kIsGlobalVar) {
      callee = GlobalFunction(op);
      base = Str(std::string(t_.gv_name.GetAny(op.get()).cast<ffi::String>()));
    } else if ((op_tag & kTagMask) == kTVar) {
      if (const int32_t* f = local_funcs_.Find(op.get())) callee = *f;
      base = Str(VarName(op));
    } else {
      base = call_;
    }
    Kind kind = kCall;
    if (callee != kNone) {
      kind = kFCall;
      callee_roles = CalleeRoles(callee);
      roles = &callee_roles;
      std::string kind_name = CompositeKind(callee);
      if (!kind_name.empty()) base = Str(kind_name);
    }
    int32_t s = NewSlot(e, kind, base);
    if (callee != kNone) {
      const Func& f = funcs_[callee];
      slots_[s].anchor = f.anchor != kNone ? f.anchor : f.first;
      if (f.unique != 0 && slots_[s].fixed == 0) slots_[s].fixed = f.unique;
    }
    if (!stack_.empty()) {
      Func& func = funcs_[stack_.back()];
      if (func.first == kNone) func.first = s;
      if (func.anchor == kNone && !is_view) func.anchor = s;
    }
    if (is_view && !args.empty()) slots_[s].view_arg = args[0].get();
    // constants (and params) consumed by this call
    for (size_t i = 0; i < args.size(); ++i) {
      const ObjectRef& a = args[i];
      int32_t role = kNone;
      if (!roles->none && i < roles->ids.size() && !strs_[roles->ids[i]].empty()) {
        role = roles->ids[i];
      }
      int32_t tag = Tag(a) & kTagMask;
      if (packed_roles != nullptr && i == 1 && tag == kTTuple) {
        Array<ObjectRef> fields = t_.tuple_fields.GetArray(a.get());
        for (size_t j = 0; j < fields.size(); ++j) {
          int32_t r = j < packed_roles->ids.size() ? packed_roles->ids[j] : kNone;
          Consume(s, fields[j], r, kNone, false);
        }
      } else if (tag == kTTuple) {
        Own(s, a, role);
        Array<ObjectRef> fields = t_.tuple_fields.GetArray(a.get());
        for (size_t j = 0; j < fields.size(); ++j) {
          Consume(s, fields[j], role, static_cast<int32_t>(j), false);
        }
      } else if (tag == kTShape) {
        Own(s, a, role);
      } else {
        Consume(s, a, role, kNone, is_view && i == 0);
      }
    }
    return s;
  }

  // an inline tuple or shape argument is named after its first consumer
  void Own(int32_t s, const ObjectRef& a, int32_t role) {
    const int32_t* t = slot_of_.Find(a.get());
    if (t != nullptr && !slots_[*t].bound && slots_[*t].consumer == kNone) {
      slots_[*t].consumer = s;
      slots_[*t].role = role;
    }
  }

  void Consume(int32_t s, const ObjectRef& a, int32_t role, int32_t sub, bool view) {
    int32_t tag = Tag(a) & kTagMask;
    int32_t c = kNone;
    if (tag == kTConst) {
      if (const int32_t* f = slot_of_.Find(a.get())) c = *f;
    } else if (tag == kTVar) {
      const int32_t* f = var_const_.Find(a.get());
      if (f == nullptr) {
        const Object* const* p = var_param_.Find(a.get());
        if (p != nullptr && role != kNone && !view && param_role_.Find(*p) == nullptr) {
          param_role_.Put(*p, role);
        }
        return;
      }
      c = *f;
    } else {
      return;
    }
    if (c == kNone) return;
    if (view) {
      slots_[s].view_const = c;
      if (tag == kTVar) {
        const int32_t* v = var_slot_.Find(a.get());
        slots_[s].src = v != nullptr ? *v : kNone;
      } else {
        slots_[s].src = c;
      }
      if (slots_[c].view_consumer == kNone) {
        slots_[c].view_consumer = s;
        slots_[c].view_role = role;
      }
      return;
    }
    Slot& cs = slots_[c];
    if (cs.consumer == kNone) {
      cs.consumer = s;
      cs.role = role;
      cs.sub = sub;
    } else if (cs.consumer != s && slots_[s].shared == kNone) {
      slots_[s].shared = c;
    }
  }

  Roles CalleeRoles(int32_t callee) {
    std::string kind = CompositeKind(callee);
    if (!kind.empty()) {
      for (const std::string& op : {"relax." + kind, kind}) {
        const Roles& r = Asked(2, op, &op_roles_);
        if (!r.none) return r;
      }
    }
    Roles out;
    bool any = false;
    for (const Object* p : funcs_[callee].params) {
      const int32_t* r = param_role_.Find(p);
      int32_t id = r != nullptr ? *r : 0;
      any = any || !strs_[id].empty();
      out.ids.push_back(id);
    }
    out.none = !any;
    if (!any) out.ids.clear();
    return out;
  }

  std::string CompositeKind(int32_t callee) const {
    const std::string& kind = funcs_[callee].composite;
    if (!kind.empty() && !target_.empty() && kind.size() > target_.size() &&
        kind.compare(0, target_.size(), target_) == 0 && kind[target_.size()] == '.') {
      return kind.substr(target_.size() + 1);
    }
    return kind;
  }

  // -- resolution (naming.py's _Resolver)
  // the id of `base` if it is free, else of the first free `<base>_<k>`
  int32_t Claim(std::string_view base) {
    bool fresh;
    int32_t id = names_.Insert(base, &fresh);
    if (fresh) return id;
    if (counter_.size() <= static_cast<size_t>(id)) counter_.resize(names_.size() + 1024, 0);
    int64_t& k = counter_[id];  // (a counter per base, as naming.py's)
    cand_.assign(base);
    cand_.push_back('_');
    size_t at = cand_.size();
    while (true) {
      ++k;
      cand_.resize(at);
      AppendInt(&cand_, k);
      int32_t got = names_.Insert(cand_, &fresh);
      if (fresh) return got;
    }
  }

  static void AppendInt(std::string* out, int64_t v) {
    char buf[24];
    int n = 0;
    bool neg = v < 0;
    uint64_t u = neg ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
    do {
      buf[n++] = static_cast<char>('0' + u % 10);
      u /= 10;
    } while (u != 0);
    if (neg) out->push_back('-');
    while (n > 0) out->push_back(buf[--n]);
  }

  // `<name a>.<b>` in the join buffer (a is a name id: read before the buffer is reused)
  std::string_view Join(int32_t a, std::string_view b) {
    join_.assign(names_.Text(a));
    join_.push_back('.');
    join_.append(b);
    return join_;
  }

  bool Derived(const Slot& s) const {
    switch (s.kind) {
      case kItem:
        return true;
      case kConst:
        if (s.consumer != kNone) return s.role != kNone;
        return s.view_consumer != kNone && s.view_role != kNone;
      case kCall:
        return s.view_const != kNone && slots_[s.view_const].consumer != kNone;
      case kFCall:
        return s.anchor != kNone;
      default:  // inline tuples and shapes
        return s.consumer != kNone && s.role != kNone;
    }
  }

  void Resolve() {
    // round 1: names already in spans and explicit wishes, first come first kept
    std::vector<int32_t> clash, later;
    int32_t n = static_cast<int32_t>(slots_.size());
    names_.Reserve(static_cast<size_t>(n));
    for (int32_t i = 0; i < n; ++i) {
      Slot& s = slots_[i];
      if (s.fixed == 0) continue;
      const std::string& fixed = strs_[s.fixed];
      if (s.kind == kFCall && s.anchor != kNone && strs_[slots_[s.anchor].fixed] == fixed) {
        continue;  // it shares its anchor's name (an earlier run): derive it again
      }
      bool fresh;
      int32_t id = names_.Insert(fixed, &fresh);
      if (!fresh) {
        clash.push_back(i);
      } else {
        s.name = id;
        s.state = kDone;
      }
    }
    for (int32_t i : clash) {
      join_.assign(strs_[slots_[i].fixed]);
      slots_[i].name = Claim(join_);
      slots_[i].state = kDone;
    }
    // round 2: generated names; round 3: derived ones (recursively, in order)
    for (int32_t i = 0; i < n; ++i) {
      Slot& s = slots_[i];
      if (s.state == kDone) continue;
      if (Derived(s)) {
        later.push_back(i);
      } else {
        s.name = Claim(strs_[s.base]);
        s.state = kDone;
      }
    }
    for (int32_t i : later) Name(i);
  }

  int32_t Name(int32_t i) {
    if (slots_[i].state == kDone) return slots_[i].name;
    if (slots_[i].state == kBusy) {  // a cycle cannot happen in valid IR
      TVM_FFI_THROW(RuntimeError) << "a naming cycle";
    }
    DepthGuard guard(&depth_, kMaxDepth);
    slots_[i].state = kBusy;
    const Slot& s = slots_[i];
    int32_t name;
    switch (s.kind) {
      case kItem: {
        if (s.src != kNone) {
          Join(Name(s.src), "");
        } else {
          join_.assign(strs_[s.src_name]);
          join_.push_back('.');
        }
        AppendInt(&join_, s.index);
        name = Claim(join_);
        break;
      }
      case kConst: {
        bool direct = s.consumer != kNone;
        Join(Name(direct ? s.consumer : s.view_consumer), strs_[direct ? s.role : s.view_role]);
        if (direct && s.sub != kNone) {
          join_.push_back('.');
          AppendInt(&join_, s.sub);
        }
        name = Claim(join_);
        break;
      }
      case kTuple:
      case kShape:
        name = Claim(Join(Name(s.consumer), strs_[s.role]));
        break;
      case kCall:
        if (s.src == kNone) TVM_FFI_THROW(RuntimeError) << "a view without its source";
        name = Claim(Join(Name(s.src), strs_[s.base]));
        break;
      default: {  // a function call shares its anchor's name (once)
        name = Name(s.anchor);
        if (aliased_.size() <= static_cast<size_t>(name)) aliased_.resize(names_.size() + 64);
        if (aliased_[name]) {
          join_.assign(names_.Text(name));  // (Claim's text must not point into the arena)
          name = Claim(join_);
          if (aliased_.size() <= static_cast<size_t>(name)) aliased_.resize(names_.size() + 64);
        }
        aliased_[name] = true;
      }
    }
    slots_[i].name = name;
    slots_[i].state = kDone;
    return name;
  }

  const NameTypes& t_;
  ffi::Map<ObjectRef, ObjectRef> functions_;
  std::string target_;
  std::unordered_map<std::string, int32_t> wishes_;  // var name -> text id
  ffi::Function classify_, ask_;
  int depth_ = 0;
  int32_t top_ = 0, saved_top_ = 0;
  ObjectRef entry_body_;  // (Begin to Finish)
  size_t stepped_ = 0;  // bindings of it handed in by Step
  int32_t const_, tuple_, shape_, call_;
  std::vector<int32_t> tags_;
  std::vector<std::string> strs_;
  std::unordered_map<std::string, int32_t> str_ids_;
  std::vector<Slot> slots_;
  std::unordered_map<int32_t, std::vector<int32_t>> extra_tops_;
  std::vector<std::string> top_names_;
  std::unordered_map<std::string, int32_t> top_ids_;
  std::vector<Func> funcs_;
  std::vector<int32_t> stack_;
  std::unordered_map<std::string, int32_t> global_funcs_;
  PtrMap<int32_t> local_funcs_;
  PtrMap<int32_t> slot_of_, var_slot_, var_const_, param_role_;
  PtrMap<const Object*> var_param_;
  PtrMap<int32_t> op_info_of_;
  std::vector<OpInfo> op_infos_;
  std::unordered_map<std::string, Roles> plugin_roles_, op_roles_;
  NameSet names_;
  std::vector<int64_t> counter_;  // name id -> the last k of `<name>_<k>` claimed
  std::vector<bool> aliased_;  // name id -> a function call shares it
  std::string join_, cand_;  // (buffers reused by every name built)
};

// the legalized var_names wishes, var name -> wanted name
std::unordered_map<std::string, std::string> Wishes(const Array<ffi::String>& keys,
                                                    const Array<ffi::String>& values) {
  if (keys.size() != values.size()) {
    TVM_FFI_THROW(ValueError) << "var_names keys and values differ in length";
  }
  std::unordered_map<std::string, std::string> wishes;
  for (size_t i = 0; i < keys.size(); ++i) wishes[std::string(keys[i])] = std::string(values[i]);
  return wishes;
}

// Plan the names of `mod` from its entry function `entry` (a GlobalVar of a Relax
// function). `target` strips a "<target>." prefix from composite kinds; `wish_keys` and
// `wish_values` are the legalized var_names wishes; `classify(node)` gives naming.py's
// tag of the node's class (`_classify`), `ask(kind, name)` what the rules say (`_Ask`).
Array<Any> PlanNames(ObjectRef mod, ObjectRef entry, ffi::String target,
                     Array<ffi::String> wish_keys, Array<ffi::String> wish_values,
                     ffi::Function classify, ffi::Function ask) {
  Namer namer(GetNameTypes(), mod, std::string(target), Wishes(wish_keys, wish_values),
              std::move(classify), std::move(ask));
  namer.Run(entry);
  return namer.Output();
}

// The text of the error being handled, for a walk that fails alone (what Python would
// have caught of that walk run alone); rethrows what no walk may swallow.
std::string FailureText() {
  try {
    throw;
  } catch (const ffi::Error& e) {
    std::string kind(e.kind());
    if (kind == "KeyboardInterrupt" || kind == "SystemExit") throw;
    return std::string(e.message());
  } catch (const std::exception& e) {
    return e.what();
  }
}

// The naming walk going along with the read of the entry function: it fails alone,
// and the read goes on.
class NamingHook final : public BindingHook {
 public:
  explicit NamingHook(Namer* namer) : namer_(namer) {}

  void Binding(const ObjectRef& binding) override {
    if (namer_ == nullptr) return;
    try {
      namer_->Step(binding);
    } catch (...) {
      error_ = FailureText();
      namer_ = nullptr;
    }
  }

  const std::string& error() const { return error_; }

 private:
  Namer* namer_;
  std::string error_;  // (not empty: the naming failed)
};

// PlanNames and the first read of the view (read.h's ReadFunction of the entry function
// `func` named `name`, every base 0, no constant known yet) in one walk over the entry
// function: the read hands the naming each binding right after reading it, while its
// nodes are in cache. Each walk fails alone: its place in the output, [names, read],
// holds its error's text instead, and Python does that walk. The arguments: PlanNames'
// then ReadFunction's.
Array<Any> ReadAndName(ObjectRef mod, ObjectRef entry, ffi::String target,
                       Array<ffi::String> wish_keys, Array<ffi::String> wish_values,
                       ffi::Function classify, ffi::Function ask, ObjectRef func,
                       ffi::String name, ffi::Bytes global_keys, ffi::Bytes global_relax) {
  Any names, read;
  std::optional<Namer> namer;
  bool stepping = false;
  try {
    namer.emplace(GetNameTypes(), mod, std::string(target), Wishes(wish_keys, wish_values),
                  std::move(classify), std::move(ask));
    stepping = namer->Begin(entry);
  } catch (...) {
    names = ffi::String(FailureText());
    namer.reset();
  }
  NamingHook hook(stepping ? &*namer : nullptr);
  try {
    read = ReadFunction(std::move(func), std::move(name), 0, 0, 0, 0, 0, ffi::Bytes(),
                        ffi::Bytes(), std::move(global_keys), std::move(global_relax), &hook);
  } catch (...) {
    read = ffi::String(FailureText());
  }
  if (!hook.error().empty()) {
    names = ffi::String(hook.error());
  } else if (namer.has_value()) {
    try {
      if (stepping) {
        namer->Finish();
      } else {
        namer->Run(entry);
      }
      names = namer->Output();
    } catch (...) {
      names = ffi::String(FailureText());
    }
  }
  return Array<Any>{names, read};
}

}  // namespace

TVM_FFI_DLL_EXPORT_TYPED_FUNC(plan_names, PlanNames);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(read_and_name, ReadAndName);
