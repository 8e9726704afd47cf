// The native channel ties walk: channel_graph.py's _Builder.run in C++, for a module
// whose every tensor has a static shape and whose every call site is of an op it knows
// (elementwise, broadcast binary, conv, matmul, permute_dims, reshape, tensor creation,
// links, and the ops without a channel rule). Anything else, or anything it does not
// understand, raises and the caller walks the module in Python: never a different
// result. It mirrors the Python walk tie for tie and in the same order (the union-find
// keeps the smaller representative, the dicts keep Python's insertion order), so the
// channel graph it gives is the Python walk's, field for field (tests/test_channel_ties.py).
//
// Inputs are int64 arrays packed by channel_native.py (numpy's, shared through
// DLPack); the attributes it needs (conv layouts and groups, permute axes, reshape
// plans) are decoded there, once per distinct attributes, and given as a flat table.

#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common.h"

namespace {

using namespace msc_rules;  // NOLINT(build/namespaces): this file's own helpers

// Site codes (channel_graph.py's _TIE_CODES).
enum : int64_t {
  kElementwise = 1,
  kBinary = 2,
  kConv = 3,
  kConvTranspose = 4,
  kMatmul = 5,
  kPermute = 6,
  kReshape = 7,
  kNothing = 8,
  kLink = 9,
  kOpaque = 10,
};
constexpr int64_t kLeafFields = 5;  // ndim, kind, flags, shape offset, value id
constexpr int64_t kSiteFields = 7;  // code, value id, out, args at, attrs at, reason, flags
constexpr int64_t kConst = 1, kParam = 2;  // leaf kinds (0: a binding)
constexpr int64_t kIo = 1, kWeight = 2;  // leaf flags
constexpr int64_t kWeightView = 1, kIsPermute = 2;  // site flags

// Reasons the walk gives itself (negative reason ids are the caller's, see Block).
enum : int64_t {
  kWindow = 0,
  kConvNoChannels,
  kConvComputed,
  kMatmulNonTensors,
  kMatmulVector,
  kContracted,
  kReshapeUnaligned,
  kReshapeSymbolic,
  kReshapeSplits,
  kFixedReasons,
};
const char* const kReasons[] = {
    "a conv window slides over the axis",
    "conv without channel axes",
    "conv with a computed weight",
    "matmul of non-tensors",
    "matmul with a vector operand",
    "contracted by a matmul of two activations",
    "reshape whose sizes do not line up",
    "reshape merges it with a symbolic axis",
    "reshape splits it into several axes",
};

void Refuse(const char* why) { TVM_FFI_THROW(ValueError) << why; }

const int64_t* Words(const ffi::Tensor& t, int64_t* n) {
  return Int64Words(t, n, "an input of the ties walk");
}

// A dict of Python's: insertion order kept, a later write keeps the key's place.
template <typename V>
struct Ordered {
  std::unordered_map<int64_t, size_t> at;
  std::vector<std::pair<int64_t, V>> items;

  V* Get(int64_t key) {
    auto it = at.find(key);
    return it == at.end() ? nullptr : &items[it->second].second;
  }
  V* SetDefault(int64_t key, V value, bool* fresh = nullptr) {
    auto it = at.find(key);
    if (fresh != nullptr) *fresh = it == at.end();
    if (it != at.end()) return &items[it->second].second;
    at.emplace(key, items.size());
    items.emplace_back(key, std::move(value));
    return &items.back().second;
  }
  void Set(int64_t key, V value) { *SetDefault(key, value) = value; }
};

struct Edge {
  int64_t src, dst, offset, block, stride, repeat;
};

using Parts = std::vector<std::pair<int64_t, int64_t>>;  // (node, extent)

class Ties {
 public:
  Ties(const ffi::Tensor& leaves, const ffi::Tensor& dims, const ffi::Tensor& sites,
       const ffi::Tensor& args, const ffi::Tensor& attrs) {
    int64_t n;
    leaf_ = Words(leaves, &n);
    if (n % kLeafFields != 0) Refuse("bad leaves");
    n_leaves_ = n / kLeafFields;
    dims_ = Words(dims, &n_dims_);
    sites_ = Words(sites, &n);
    if (n % kSiteFields != 0) Refuse("bad sites");
    n_sites_ = n / kSiteFields;
    args_ = Words(args, &n_args_);
    attrs_ = Words(attrs, &n_attrs_);
    base_.resize(n_leaves_);
    int64_t nodes = 0;
    for (int64_t leaf = 0; leaf < n_leaves_; ++leaf) {
      base_[leaf] = nodes;
      int64_t nd = Ndim(leaf), at = leaf_[kLeafFields * leaf + 3];
      if (nd < 0 || at < 0 || at + nd > n_dims_) Refuse("a tensor without a static shape");
      nodes += nd;
    }
    parent_.resize(nodes);
    for (int64_t i = 0; i < nodes; ++i) parent_[i] = i;
    site_of_.assign(n_leaves_, -1);
    for (int64_t s = 0; s < n_sites_; ++s) {
      int64_t out = Site(s)[2];
      if (Site(s)[0] != kLink && out >= 0 && Leaf(out) && site_of_[out] < 0) site_of_[out] = s;
    }
  }

  Array<Any> Run() {
    for (int64_t s = 0; s < n_sites_; ++s) Walk(s);
    CheckComposites();
    std::vector<int64_t> views;
    for (int64_t leaf = 0; leaf < n_leaves_; ++leaf) {
      int64_t s = site_of_[leaf];
      if (s >= 0 && (Site(s)[6] & kWeightView) && IsWeight(leaf, 0)) views.push_back(leaf);
    }
    std::vector<int64_t> roots(parent_.size());
    for (size_t i = 0; i < parent_.size(); ++i) roots[i] = Find(static_cast<int64_t>(i));
    std::vector<int64_t> producers, consumers, derived, blocked, composite, depthwise,
        depthwise_sites, folds;
    for (auto& [node, vid] : producers_.items) producers.insert(producers.end(), {node, vid});
    for (auto& c : consumers_) consumers.insert(consumers.end(), {c[0], c[1], c[2]});
    for (const Edge& e : derived_) {
      derived.insert(derived.end(), {e.src, e.dst, e.offset, e.block, e.stride, e.repeat});
    }
    for (auto& [node, reasons] : blocked_.items) {
      blocked.insert(blocked.end(), {node, static_cast<int64_t>(reasons.size())});
      blocked.insert(blocked.end(), reasons.begin(), reasons.end());
    }
    for (const auto& [key, parts] : comps_) {
      if (key < 0) continue;  // (popped)
      composite.insert(composite.end(), {key, static_cast<int64_t>(parts.size())});
      for (const auto& [n, e] : parts) composite.insert(composite.end(), {n, e});
    }
    for (auto& [w, vid] : depthwise_.items) depthwise.insert(depthwise.end(), {w, vid});
    for (auto& [vid, s] : depthwise_sites_.items) {
      depthwise_sites.insert(depthwise_sites.end(), {vid, s});
    }
    for (auto& [n, groups] : folds_.items) folds.insert(folds.end(), {n, groups});
    Array<ffi::String> reasons;
    for (const std::string& r : reasons_) reasons.push_back(ffi::String(r));
    return Array<Any>{ToBytes(roots),    ToBytes(producers), ToBytes(consumers),
                      ToBytes(derived),  ToBytes(blocked),   ToBytes(composite),
                      ToBytes(depthwise), ToBytes(depthwise_sites), ToBytes(folds),
                      ToBytes(views),    reasons};
  }

 private:
  // -- inputs
  const int64_t* Site(int64_t s) const { return sites_ + kSiteFields * s; }
  bool Leaf(int64_t leaf) const {
    if (leaf < 0 || leaf >= n_leaves_) Refuse("a leaf out of range");
    return true;
  }
  int64_t Ndim(int64_t leaf) const { return leaf_[kLeafFields * leaf]; }
  int64_t Kind(int64_t leaf) const { return leaf_[kLeafFields * leaf + 1]; }
  int64_t Flags(int64_t leaf) const { return leaf_[kLeafFields * leaf + 2]; }
  int64_t ValueOf(int64_t leaf) const { return leaf_[kLeafFields * leaf + 4]; }
  // the extent of an axis in range (all shapes are static)
  int64_t Ext(int64_t leaf, int64_t axis) const {
    if (axis < 0 || axis >= Ndim(leaf)) Refuse("an axis out of range");
    return dims_[leaf_[kLeafFields * leaf + 3] + axis];
  }
  // the node of `axis` of `leaf` (negative axes count from the end, as ChannelGraph.node)
  int64_t Node(int64_t leaf, int64_t axis) const {
    Leaf(leaf);
    if (axis < 0) axis += Ndim(leaf);
    if (axis < 0 || axis >= Ndim(leaf)) Refuse("an axis out of range");
    return base_[leaf] + axis;
  }
  // the site's arguments: their count at [0], then each leaf or -1 for None
  const int64_t* Args(int64_t s) const {
    int64_t at = Site(s)[3];
    if (at < 0 || at >= n_args_ || at + 1 + args_[at] > n_args_) Refuse("bad arguments");
    return args_ + at;
  }
  int64_t Arg(int64_t s, int64_t k) const {
    const int64_t* a = Args(s);
    if (k >= a[0]) Refuse("too few arguments");  // (an IndexError in Python: opaque)
    return a[1 + k] >= 0 && Leaf(a[1 + k]) ? a[1 + k] : -1;
  }
  const int64_t* Attrs(int64_t s, int64_t need) const {
    int64_t at = Site(s)[4];
    if (at < 0 || at + need > n_attrs_) Refuse("bad attributes");
    return attrs_ + at;
  }

  // -- the union-find (ChannelGraph.union, find, block)
  int64_t Find(int64_t n) {
    while (parent_[n] != n) {
      parent_[n] = parent_[parent_[n]];
      n = parent_[n];
    }
    return n;
  }

  void Union(int64_t a, int64_t b) {
    a = Find(a);
    b = Find(b);
    if (a == b) return;
    int64_t ra = a < b ? a : b, rb = a < b ? b : a;
    parent_[rb] = ra;
    auto it = comp_at_.find(rb);
    if (it == comp_at_.end()) return;
    size_t ib = it->second;
    comp_at_.erase(it);
    Parts comp = std::move(comps_[ib].second);
    comps_[ib].first = -1;
    auto ia = comp_at_.find(ra);
    if (ia == comp_at_.end()) {
      comp_at_.emplace(ra, comps_.size());
      comps_.emplace_back(ra, std::move(comp));
      return;
    }
    Parts mine = comps_[ia->second].second;  // (a copy: the unions below may move it)
    if (mine.size() != comp.size()) return;
    for (size_t k = 0; k < mine.size(); ++k) {
      if (mine[k].second != comp[k].second) return;
    }
    // two merged axes tied: so are the axes merged into them
    for (size_t k = 0; k < mine.size(); ++k) Union(mine[k].first, comp[k].first);
  }

  void Block(int64_t n, int64_t reason) {
    std::vector<int64_t>* got = blocked_.SetDefault(n, {});
    for (int64_t r : *got) {
      if (r == reason) return;
    }
    got->push_back(reason);
  }

  int64_t Reason(const std::string& text) {
    for (size_t i = 0; i < reasons_.size(); ++i) {
      if (reasons_[i] == text) return static_cast<int64_t>(i);
    }
    reasons_.push_back(text);
    return static_cast<int64_t>(reasons_.size() - 1);
  }

  void TieAll(int64_t a, int64_t b) {
    int64_t nd = Ndim(a);
    if (nd == Ndim(b) && nd > 0) {
      for (int64_t i = 0; i < nd; ++i) Union(base_[a] + i, base_[b] + i);
    }
  }

  void BlockAll(int64_t leaf, int64_t reason) {
    for (int64_t i = 0; i < Ndim(leaf); ++i) Block(base_[leaf] + i, reason);
  }

  void Opaque(int64_t s, int64_t reason) {
    const int64_t* a = Args(s);
    for (int64_t k = 0; k < a[0]; ++k) {
      if (a[1 + k] >= 0 && Leaf(a[1 + k])) BlockAll(a[1 + k], reason);
    }
    int64_t out = Site(s)[2];
    if (out >= 0 && Leaf(out)) BlockAll(out, reason);
  }

  bool IsWeight(int64_t leaf, int depth) const {
    if (Kind(leaf) == kConst) return true;
    if (Kind(leaf) == kParam) return (Flags(leaf) & kWeight) != 0;
    int64_t s = site_of_[leaf];
    if (s < 0 || !(Site(s)[6] & kWeightView) || depth > 8) return false;
    const int64_t* a = Args(s);
    return a[0] > 0 && a[1] >= 0 && Leaf(a[1]) && IsWeight(a[1], depth + 1);
  }

  // The node of the constant or parameter that a weight view's axis reads.
  int64_t BaseNode(int64_t leaf, int64_t axis) {
    for (int k = 0; k < 8; ++k) {
      int64_t s = site_of_[leaf];
      if (s < 0 || !(Site(s)[6] & kWeightView)) break;
      const int64_t* a = Args(s);
      if (a[0] == 0 || a[1] < 0) break;
      int64_t src = a[1];
      Leaf(src);
      if (Site(s)[6] & kIsPermute) {
        const int64_t* at = Attrs(s, 1);
        if (at[0] < 0) {  // reversed axes
          int64_t nd = Ndim(src);
          if (axis < -nd || axis >= nd) Refuse("an axis out of range");
          axis = nd - 1 - (axis < 0 ? axis + nd : axis);
        } else {
          if (axis < -at[0] || axis >= at[0]) Refuse("an axis out of range");
          axis = Attrs(s, 1 + at[0])[1 + (axis < 0 ? axis + at[0] : axis)];
        }
      }
      leaf = src;
    }
    return Node(leaf, axis);
  }

  // -- the sites
  void Walk(int64_t s) {
    const int64_t* site = Site(s);
    int64_t code = site[0], out = site[2];
    if (code == kLink) {
      int64_t src = Arg(s, 0);
      if (src >= 0 && out >= 0 && Leaf(out)) TieAll(src, out);
      return;
    }
    if (code == kNothing) return;
    if (code == kOpaque) {
      Opaque(s, site[5]);
      return;
    }
    if (out < 0) Refuse("a site without a tensor result");
    Leaf(out);
    switch (code) {
      case kElementwise: {
        if (Args(s)[0] > 0) {
          int64_t a = Arg(s, 0);
          if (a >= 0) TieAll(a, out);
        }
        return;
      }
      case kBinary: {
        const int64_t* a = Args(s);
        for (int64_t k = 0; k < a[0]; ++k) {
          if (a[1 + k] >= 0 && Leaf(a[1 + k])) TieBroadcast(out, a[1 + k]);
        }
        return;
      }
      case kConv:
      case kConvTranspose:
        Conv(s, code == kConvTranspose);
        return;
      case kMatmul:
        Matmul(s);
        return;
      case kPermute:
        Permute(s);
        return;
      case kReshape:
        Reshape(s);
        return;
      default:
        Refuse("a site of an op the native walk does not know");
    }
  }

  void TieBroadcast(int64_t out, int64_t a) {
    int64_t on = Ndim(out), an = Ndim(a);
    for (int64_t i = 0; i < an; ++i) {
      int64_t j = i + on - an;
      if (j < 0) continue;
      int64_t e = Ext(a, i);
      if (e == 1 || e != Ext(out, j)) continue;
      Union(base_[a] + i, base_[out] + j);
    }
  }

  void Permute(int64_t s) {
    int64_t data = Arg(s, 0), out = Site(s)[2];
    if (data < 0) return;
    int64_t nd = Ndim(data), bd = base_[data], bo = base_[out];
    const int64_t* at = Attrs(s, 1);
    int64_t n = at[0] < 0 ? nd : at[0];
    if (n > Ndim(out) || (nd == 0 && n > 0)) Refuse("permute_dims axes do not fit");
    const int64_t* axes = at[0] < 0 ? nullptr : Attrs(s, 1 + n) + 1;
    for (int64_t j = 0; j < n; ++j) {
      int64_t i = axes == nullptr ? nd - 1 - j : axes[j];
      i = ((i % nd) + nd) % nd;  // (Python's %)
      Union(bd + i, bo + j);
    }
  }

  void Conv(int64_t s, bool transpose) {
    int64_t data = Arg(s, 0), weight = Arg(s, 1), out = Site(s)[2], vid = Site(s)[1];
    // [groups, len, data layout..., len, kernel layout..., len, out layout...]
    const int64_t* at = Attrs(s, 2);
    int64_t groups = at[0];
    std::string layouts[3];
    int64_t k = 1;
    for (std::string& lay : layouts) {
      int64_t len = Attrs(s, k + 1)[k];
      const int64_t* chars = Attrs(s, k + 1 + len) + k + 1;
      for (int64_t c = 0; c < len; ++c) lay.push_back(static_cast<char>(chars[c]));
      k += 1 + len;
    }
    const std::string &dl = layouts[0], &kl = layouts[1], &ol = layouts[2];
    if (data < 0 || weight < 0 || dl.find('C') == std::string::npos ||
        kl.find('O') == std::string::npos) {
      Opaque(s, kConvNoChannels);
      return;
    }
    if (kl.find('I') == std::string::npos || ol.find('C') == std::string::npos ||
        static_cast<int64_t>(dl.size()) != Ndim(data) ||
        static_cast<int64_t>(kl.size()) != Ndim(weight) ||
        static_cast<int64_t>(ol.size()) != Ndim(out) || groups <= 0) {
      Refuse("conv layouts the native walk does not take");
    }
    int64_t bd = base_[data], bw = base_[weight], bo = base_[out];
    if (dl.find('N') != std::string::npos && ol.find('N') != std::string::npos) {
      Union(bd + static_cast<int64_t>(dl.find('N')), bo + static_cast<int64_t>(ol.find('N')));
    }
    int64_t d_c = dl.find('C'), w_o = kl.find('O'), w_i = kl.find('I'), o_c = ol.find('C');
    for (size_t i = 0; i < dl.size(); ++i) {
      if (dl[i] != 'N' && dl[i] != 'C') Block(bd + static_cast<int64_t>(i), kWindow);
    }
    if (!IsWeight(weight, 0)) {
      Opaque(s, kConvComputed);
      return;
    }
    int64_t c_in = Ext(data, d_c), c_out = Ext(weight, w_o);
    if (groups == 1) {
      Union(bw + w_o, bo + o_c);
      producers_.Set(bw + w_o, vid);
      consumers_.push_back({bd + d_c, bw + w_i, vid});
    } else if (groups == c_in && groups == c_out && !transpose) {
      Union(bd + d_c, bo + o_c);
      Union(bw + w_o, bo + o_c);
      depthwise_.Set(weight, ValueOf(out));
      depthwise_sites_.Set(vid, s);
    } else if (!transpose && c_in % groups == 0 && c_out % groups == 0) {
      Union(bw + w_o, bo + o_c);
      producers_.Set(bw + w_o, vid);
      consumers_.push_back({bd + d_c, bw + w_i, vid});
      folds_.Set(bw + w_o, groups);
      folds_.Set(bw + w_i, groups);
    } else {
      int64_t reason =
          Reason("grouped conv (" + std::to_string(groups) + " groups) ties channels in groups");
      Block(bd + d_c, reason);
      Block(bo + o_c, reason);
      Union(bw + w_o, bo + o_c);
      producers_.Set(bw + w_o, vid);
    }
  }

  void Matmul(int64_t s) {
    int64_t lhs = Arg(s, 0), rhs = Arg(s, 1), out = Site(s)[2], vid = Site(s)[1];
    if (lhs < 0 || rhs < 0) {
      Opaque(s, kMatmulNonTensors);
      return;
    }
    int64_t ln = Ndim(lhs), rn = Ndim(rhs), on = Ndim(out);
    if (ln < 2 || rn < 2) {
      Opaque(s, kMatmulVector);
      return;
    }
    if (on < 2) Refuse("a matmul of a result below rank 2");
    for (auto [a, an] : {std::pair<int64_t, int64_t>{lhs, ln}, {rhs, rn}}) {
      for (int64_t i = 0; i < an - 2; ++i) {
        int64_t j = i + (on - 2) - (an - 2);
        if (j < 0) continue;
        int64_t e = Ext(a, i);
        if (e != 1 && e == Ext(out, j)) Union(Node(a, i), Node(out, j));
      }
    }
    Union(Node(lhs, ln - 2), Node(out, on - 2));
    if (IsWeight(rhs, 0)) {
      Union(Node(rhs, rn - 1), Node(out, on - 1));
      producers_.Set(BaseNode(rhs, rn - 1), vid);
      consumers_.push_back({Node(lhs, ln - 1), Node(rhs, rn - 2), vid});
      return;
    }
    Union(Node(rhs, rn - 1), Node(out, on - 1));
    Block(Node(lhs, ln - 1), kContracted);
    Block(Node(rhs, rn - 2), kContracted);
  }

  // (the plan: [groups, then per group: n, source axes..., m, destination axes...], or
  // [-1]: the sizes do not line up)
  void Reshape(int64_t s) {
    int64_t data = Arg(s, 0), out = Site(s)[2];
    if (data < 0) return;
    const int64_t* at = Attrs(s, 1);
    if (at[0] < 0) {
      Opaque(s, kReshapeUnaligned);
      return;
    }
    int64_t k = 1;
    for (int64_t g = 0; g < at[0]; ++g) {
      int64_t ns = Attrs(s, k + 1)[k];
      const int64_t* src = Attrs(s, k + 1 + ns) + k + 1;
      k += 1 + ns;
      int64_t nd = Attrs(s, k + 1)[k];
      const int64_t* dst = Attrs(s, k + 1 + nd) + k + 1;
      k += 1 + nd;
      if (ns == 0 || nd == 0) Refuse("an empty reshape group");
      if (ns == 1 && nd == 1) {
        Union(Node(data, src[0]), Node(out, dst[0]));
        continue;
      }
      if (nd == 1) {
        // merged axes: the outermost maps onto blocks of the merged axis; the inner
        // ones are remembered, in case a later reshape splits them back
        int64_t inner = 1;
        for (int64_t a = 1; a < ns; ++a) inner *= Ext(data, src[a]);
        if (inner != 0) {
          derived_.push_back({Node(data, src[0]), Node(out, dst[0]), 0, inner, 0, 1});
        } else {
          Block(Node(data, src[0]), kReshapeSymbolic);
        }
        int64_t root = Find(Node(out, dst[0]));
        if (comp_at_.find(root) == comp_at_.end()) {
          Parts parts;
          for (int64_t a = 0; a < ns; ++a) parts.emplace_back(Node(data, src[a]), Ext(data, src[a]));
          comp_at_.emplace(root, comps_.size());
          comps_.emplace_back(root, std::move(parts));
        }
        continue;
      }
      if (ns == 1) {
        auto it = comp_at_.find(Find(Node(data, src[0])));
        if (it != comp_at_.end()) {
          Parts comp = comps_[it->second].second;
          bool same = static_cast<int64_t>(comp.size()) == nd;
          for (int64_t d = 0; same && d < nd; ++d) same = comp[d].second == Ext(out, dst[d]);
          if (same) {  // the split undoes an earlier merge: the same axes come back
            for (int64_t d = 0; d < nd; ++d) Union(comp[d].first, Node(out, dst[d]));
            continue;
          }
        }
        // one axis split into (outer, inner...): the outer axis counts blocks of the
        // inner size (attention heads of head_dim channels)
        int64_t inner = 1;
        for (int64_t d = 1; d < nd; ++d) inner *= Ext(out, dst[d]);
        if (inner != 0) {
          derived_.push_back({Node(data, src[0]), Node(out, dst[0]), 0, -inner, 0, 1});
          continue;
        }
      }
      for (int64_t a = 0; a < ns; ++a) Block(Node(data, src[a]), kReshapeSplits);
      for (int64_t d = 0; d < nd; ++d) Block(Node(out, dst[d]), kReshapeSplits);
    }
  }

  // A merged axis that reaches anything but ties mixes the axes merged into it (see
  // _Builder.check_composites).
  void CheckComposites() {
    std::unordered_set<int64_t> risky;
    for (auto& c : consumers_) risky.insert(Find(c[0]));
    for (const Edge& e : derived_) risky.insert(Find(e.src));
    for (auto& item : blocked_.items) risky.insert(Find(item.first));
    for (int64_t leaf = 0; leaf < n_leaves_; ++leaf) {
      if (Flags(leaf) & kIo) {
        for (int64_t i = 0; i < Ndim(leaf); ++i) risky.insert(Find(base_[leaf] + i));
      }
    }
    size_t n = comps_.size();
    for (size_t c = 0; c < n; ++c) {
      int64_t root = comps_[c].first;
      if (root < 0 || !risky.count(Find(root))) continue;
      const Parts& comp = comps_[c].second;
      for (size_t k = 1; k < comp.size(); ++k) {
        int64_t inner = 1, outer = 1;
        for (size_t j = k + 1; j < comp.size(); ++j) inner *= comp[j].second;
        for (size_t j = 0; j < k; ++j) outer *= comp[j].second;
        derived_.push_back({comp[k].first, root, 0, inner, inner * comp[k].second, outer});
      }
    }
  }

  const int64_t* leaf_;
  int64_t n_leaves_;
  const int64_t* dims_;
  int64_t n_dims_;
  const int64_t* sites_;
  int64_t n_sites_;
  const int64_t* args_;
  int64_t n_args_;
  const int64_t* attrs_;
  int64_t n_attrs_;
  std::vector<int64_t> base_, parent_, site_of_;
  Ordered<int64_t> producers_, depthwise_, depthwise_sites_, folds_;
  Ordered<std::vector<int64_t>> blocked_;
  std::vector<std::array<int64_t, 3>> consumers_;
  std::vector<Edge> derived_;
  // the merged axes by class, in Python's dict order (a popped entry's key is -1)
  std::vector<std::pair<int64_t, Parts>> comps_;
  std::unordered_map<int64_t, size_t> comp_at_;
  std::vector<std::string> reasons_{std::begin(kReasons), std::end(kReasons)};
};

// The ties of a module (see the file comment): [roots, producers, consumers, derived,
// blocked, composite, depthwise, depthwise sites, folds, weight views] as int64 arrays,
// then the walk's reasons; raises when the module is not one it takes.
Array<Any> ChannelTies(ffi::Tensor leaves, ffi::Tensor dims, ffi::Tensor sites,
                       ffi::Tensor args, ffi::Tensor attrs) {
  static_assert(sizeof(kReasons) / sizeof(kReasons[0]) == kFixedReasons, "reasons");
  Ties ties(leaves, dims, sites, args, attrs);
  return ties.Run();
}

}  // namespace

TVM_FFI_DLL_EXPORT_TYPED_FUNC(channel_ties, ChannelTies);
