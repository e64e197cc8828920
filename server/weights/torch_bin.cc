// torch.save checkpoints as safetensors bytes: a bounded, allowlisting pickle interpreter (no
// Python object is ever called) over data.pkl, libtorch's PyTorchStreamReader for the zip.
#include "server/weights/torch_bin.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>
#include <c10/util/Exception.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <exception>
#include <new>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace embedserve::weights {
namespace {

// A user-controlled string for a message: printable ASCII, at most 80 characters.
std::string Quote(absl::string_view s) {
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < 80; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&out, absl::StrFormat("\\x%02x", c));
    }
  }
  if (s.size() > 80) out += "...";
  return out + "'";
}

// torch.<Name>Storage: the element type of a storage in a persistent id.
struct StorageType {
  const char* name;        // "FloatStorage"
  const char* dtype_name;  // "float32"
  size_t element_size;
  bool supported;
  TensorDtype dtype;  // meaningful where supported
};
constexpr StorageType kStorageTypes[] = {
    {"FloatStorage", "float32", 4, true, TensorDtype::kF32},
    {"HalfStorage", "float16", 2, true, TensorDtype::kF16},
    {"BFloat16Storage", "bfloat16", 2, true, TensorDtype::kBF16},
    {"LongStorage", "int64", 8, true, TensorDtype::kI64},
    {"DoubleStorage", "float64", 8, false, TensorDtype::kF64},
    {"IntStorage", "int32", 4, false, TensorDtype::kI32},
    {"ShortStorage", "int16", 2, false, TensorDtype::kI16},
    {"CharStorage", "int8", 1, false, TensorDtype::kI8},
    {"ByteStorage", "uint8", 1, false, TensorDtype::kU8},
    {"BoolStorage", "bool", 1, false, TensorDtype::kBool},
    {"ComplexFloatStorage", "complex64", 8, false, TensorDtype::kF32},
    {"ComplexDoubleStorage", "complex128", 16, false, TensorDtype::kF32},
};

enum class Kind : uint8_t {
  kNone, kBool, kInt, kFloat, kString, kBytes, kTuple, kList, kDict, kGlobal, kStorage, kTensor
};

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kNone: return "None";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kBytes: return "bytes";
    case Kind::kTuple: return "tuple";
    case Kind::kList: return "list";
    case Kind::kDict: return "dict";
    case Kind::kGlobal: return "global";
    case Kind::kStorage: return "storage";
    case Kind::kTensor: return "tensor";
  }
  return "?";
}

enum class Global : uint8_t { kOrderedDict, kRebuildTensorV2, kRebuildParameter, kStorageType };

struct Node;
struct DictData {
  std::vector<std::pair<Node*, Node*>> entries;
  absl::flat_hash_map<std::string, size_t> by_string;  // str keys -> index in entries
};
struct StorageData {
  std::string key;
  const StorageType* type = nullptr;
  int64_t numel = 0;
};
struct TensorData {
  const Node* storage = nullptr;
  int64_t offset = 0;
  std::vector<int64_t> sizes, strides;
};
// One pickled object. Nodes live in the interpreter's arena and refer to each other by
// pointer, so memo cycles cost nothing and nothing is freed before the arena.
struct Node {
  Kind kind = Kind::kNone;
  int64_t i = 0;  // int, bool
  double f = 0;
  std::string s;  // str, bytes; a global's "module.name"
  Global global = Global::kOrderedDict;
  const StorageType* storage_type = nullptr;  // Global::kStorageType
  std::vector<Node*> items;                   // tuple, list
  std::unique_ptr<DictData> dict;
  std::unique_ptr<StorageData> storage;
  std::unique_ptr<TensorData> tensor;
};

// The restricted pickle machine over data.pkl. Every read is bounds-checked; objects and
// container slots are counted against the limits.
class Unpickler {
 public:
  Unpickler(const std::string& name, absl::string_view pickle, const TorchBinLimits& limits)
      : name_(name), in_(pickle), limits_(limits) {}

  absl::StatusOr<Node*> Run() {
    while (true) {
      if (pos_ >= in_.size()) return Fail("ends without a STOP opcode (truncated?)");
      op_pos_ = pos_;
      const uint8_t op = static_cast<uint8_t>(in_[pos_++]);
      if (op == '.') {
        absl::StatusOr<Node*> result = Pop();
        if (!result.ok()) return result.status();
        return *result;
      }
      absl::Status status = Step(op);
      if (!status.ok()) return status;
    }
  }

 private:
  template <typename... Args>
  absl::Status Fail(const Args&... args) const {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ": data.pkl at byte ", op_pos_, ": ", args...));
  }

  absl::StatusOr<Node*> New(Kind kind) {
    if (arena_.size() >= limits_.max_objects) {
      return Fail("more than ", limits_.max_objects, " objects");
    }
    arena_.emplace_back();
    arena_.back().kind = kind;
    return &arena_.back();
  }
  absl::Status Slot(uint64_t n = 1) {
    slots_ += n;
    if (slots_ > limits_.max_slots) return Fail("more than ", limits_.max_slots, " values");
    return absl::OkStatus();
  }
  absl::Status Push(Node* node) {
    absl::Status status = Slot();
    if (!status.ok()) return status;
    stack_.push_back(node);
    return absl::OkStatus();
  }
  size_t Floor() const { return marks_.empty() ? 0 : marks_.back(); }
  absl::StatusOr<Node*> Pop() {
    if (stack_.size() <= Floor()) return Fail("pops from an empty stack");
    Node* top = stack_.back();
    stack_.pop_back();
    return top;
  }
  absl::StatusOr<Node*> Top() {
    if (stack_.size() <= Floor()) return Fail("reads an empty stack");
    return stack_.back();
  }
  absl::StatusOr<std::vector<Node*>> PopMark() {
    if (marks_.empty()) return Fail("has no MARK to pop to");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<Node*> items(stack_.begin() + static_cast<std::ptrdiff_t>(mark), stack_.end());
    stack_.resize(mark);
    return items;
  }

  bool Take(uint64_t n, absl::string_view* out) {
    if (n > in_.size() - pos_) return false;
    *out = in_.substr(pos_, n);
    pos_ += n;
    return true;
  }
  bool TakeLE(int n, uint64_t* out) {
    absl::string_view b;
    if (!Take(n, &b)) return false;
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; --k) v = (v << 8) | static_cast<uint8_t>(b[k]);
    *out = v;
    return true;
  }
  absl::Status Truncated() const { return Fail("the opcode's argument runs past the end"); }
  absl::StatusOr<absl::string_view> Line() {
    const size_t nl = in_.find('\n', pos_);
    if (nl == absl::string_view::npos || nl - pos_ > 256) {
      return Fail("GLOBAL name is not a newline-terminated line of at most 256 bytes");
    }
    absl::string_view line = in_.substr(pos_, nl - pos_);
    pos_ = nl + 1;
    return line;
  }

  absl::Status PushInt(int64_t v) {
    absl::StatusOr<Node*> n = New(Kind::kInt);
    if (!n.ok()) return n.status();
    (*n)->i = v;
    return Push(*n);
  }
  absl::Status PushString(Kind kind, uint64_t length) {
    absl::string_view text;
    if (!Take(length, &text)) return Truncated();
    absl::StatusOr<Node*> n = New(kind);
    if (!n.ok()) return n.status();
    (*n)->s.assign(text.data(), text.size());
    return Push(*n);
  }
  absl::Status PushSequence(Kind kind, std::vector<Node*> items) {
    absl::StatusOr<Node*> n = New(kind);
    if (!n.ok()) return n.status();
    absl::Status status = Slot(items.size());
    if (!status.ok()) return status;
    (*n)->items = std::move(items);
    return Push(*n);
  }
  absl::StatusOr<Node*> NewDict() {
    absl::StatusOr<Node*> n = New(Kind::kDict);
    if (n.ok()) (*n)->dict = std::make_unique<DictData>();
    return n;
  }
  absl::Status SetItems(Node* dict, const std::vector<Node*>& pairs) {
    if (dict->kind != Kind::kDict) return Fail("sets items on a ", KindName(dict->kind));
    if (pairs.size() % 2 != 0) return Fail("SETITEMS with an odd number of values");
    absl::Status status = Slot(pairs.size());
    if (!status.ok()) return status;
    DictData& d = *dict->dict;
    for (size_t k = 0; k < pairs.size(); k += 2) {
      Node* key = pairs[k];
      Node* value = pairs[k + 1];
      if (key->kind == Kind::kString) {
        auto [it, inserted] = d.by_string.emplace(key->s, d.entries.size());
        if (!inserted) {
          d.entries[it->second].second = value;  // as in Python: the last value wins
          continue;
        }
      }
      d.entries.emplace_back(key, value);
    }
    return absl::OkStatus();
  }
  absl::Status Append(Node* list, const std::vector<Node*>& values) {
    if (list->kind != Kind::kList) return Fail("appends to a ", KindName(list->kind));
    absl::Status status = Slot(values.size());
    if (!status.ok()) return status;
    list->items.insert(list->items.end(), values.begin(), values.end());
    return absl::OkStatus();
  }

  absl::Status PushGlobal(absl::string_view module, absl::string_view name) {
    absl::StatusOr<Node*> n = New(Kind::kGlobal);
    if (!n.ok()) return n.status();
    Node& g = **n;
    g.s = absl::StrCat(module, ".", name);
    if (module == "collections" && name == "OrderedDict") {
      g.global = Global::kOrderedDict;
    } else if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
      g.global = Global::kRebuildTensorV2;
    } else if (module == "torch._utils" && name == "_rebuild_parameter") {
      g.global = Global::kRebuildParameter;
    } else {
      for (const StorageType& type : kStorageTypes) {
        if (module == "torch" && name == type.name) {
          g.global = Global::kStorageType;
          g.storage_type = &type;
        }
      }
      if (g.storage_type == nullptr) {
        return Fail("global ", Quote(g.s),
                    " is not allowed: a checkpoint may hold only tensors and plain containers "
                    "(allowed: collections.OrderedDict, torch._utils._rebuild_tensor_v2, "
                    "torch._utils._rebuild_parameter, torch.*Storage); nothing was executed");
      }
    }
    return Push(*n);
  }

  static bool IntTuple(const Node* n, std::vector<int64_t>* out) {
    if (n->kind != Kind::kTuple) return false;
    out->clear();
    for (const Node* item : n->items) {
      if (item->kind != Kind::kInt) return false;
      out->push_back(item->i);
    }
    return true;
  }

  absl::Status Reduce() {
    absl::StatusOr<Node*> args = Pop();
    if (!args.ok()) return args.status();
    absl::StatusOr<Node*> callable = Pop();
    if (!callable.ok()) return callable.status();
    if ((*callable)->kind != Kind::kGlobal) {
      return Fail("REDUCE calls a ", KindName((*callable)->kind), ", not an allowed global");
    }
    if ((*args)->kind != Kind::kTuple) return Fail("REDUCE arguments are not a tuple");
    const Node& g = **callable;
    const std::vector<Node*>& a = (*args)->items;
    switch (g.global) {
      case Global::kOrderedDict: {
        if (!a.empty()) return Fail("collections.OrderedDict is only read with no arguments");
        absl::StatusOr<Node*> dict = NewDict();
        if (!dict.ok()) return dict.status();
        return Push(*dict);
      }
      case Global::kRebuildParameter: {
        if (a.size() != 3 || a[0]->kind != Kind::kTensor) {
          return Fail("torch._utils._rebuild_parameter needs (tensor, requires_grad, hooks)");
        }
        return Push(a[0]);
      }
      case Global::kRebuildTensorV2: {
        if ((a.size() != 6 && a.size() != 7) || a[0]->kind != Kind::kStorage ||
            a[1]->kind != Kind::kInt) {
          return Fail("torch._utils._rebuild_tensor_v2 needs (storage, offset, size, stride, "
                      "requires_grad, hooks[, metadata])");
        }
        auto t = std::make_unique<TensorData>();
        t->storage = a[0];
        t->offset = a[1]->i;
        if (!IntTuple(a[2], &t->sizes) || !IntTuple(a[3], &t->strides)) {
          return Fail("torch._utils._rebuild_tensor_v2: size and stride must be tuples of ints");
        }
        absl::StatusOr<Node*> n = New(Kind::kTensor);
        if (!n.ok()) return n.status();
        (*n)->tensor = std::move(t);
        return Push(*n);
      }
      case Global::kStorageType:
        return Fail("calling ", Quote(g.s), " is not supported (only as a persistent id's type)");
    }
    return Fail("unknown global");
  }

  absl::Status PersistentId() {
    absl::StatusOr<Node*> pid = Pop();
    if (!pid.ok()) return pid.status();
    const std::vector<Node*>& p = (*pid)->items;
    if ((*pid)->kind != Kind::kTuple || p.size() != 5 || p[0]->kind != Kind::kString ||
        p[0]->s != "storage" || p[1]->kind != Kind::kGlobal ||
        p[1]->global != Global::kStorageType || p[2]->kind != Kind::kString ||
        p[3]->kind != Kind::kString || p[4]->kind != Kind::kInt || p[4]->i < 0) {
      return Fail("persistent id is not ('storage', torch.<Type>Storage, key, location, numel)");
    }
    const StorageType* type = p[1]->storage_type;
    const std::string& key = p[2]->s;
    auto it = storages_.find(key);
    if (it != storages_.end()) {
      const StorageData& s = *it->second->storage;
      if (s.type != type || s.numel != p[4]->i) {
        return Fail("storage ", Quote(key), " appears as torch.", s.type->name, " of ", s.numel,
                    " elements and as torch.", type->name, " of ", p[4]->i);
      }
      return Push(it->second);
    }
    absl::StatusOr<Node*> n = New(Kind::kStorage);
    if (!n.ok()) return n.status();
    (*n)->storage = std::make_unique<StorageData>();
    (*n)->storage->key = key;
    (*n)->storage->type = type;
    (*n)->storage->numel = p[4]->i;
    storages_.emplace(key, *n);
    return Push(*n);
  }

  absl::Status Step(uint8_t op) {
    uint64_t v = 0;
    switch (op) {
      case 0x80:  // PROTO
        if (!TakeLE(1, &v)) return Truncated();
        if (v > 5) return Fail("pickle protocol ", v, " is newer than 5");
        return absl::OkStatus();
      case 0x95:  // FRAME (a length hint)
        return TakeLE(8, &v) ? absl::OkStatus() : Truncated();
      case '(':  // MARK
        if (absl::Status s = Slot(); !s.ok()) return s;
        marks_.push_back(stack_.size());
        return absl::OkStatus();
      case '0':  // POP
        return Pop().status();
      case '1':  // POP_MARK
        return PopMark().status();
      case '2': {  // DUP
        absl::StatusOr<Node*> top = Top();
        if (!top.ok()) return top.status();
        return Push(*top);
      }
      case 'N': return Push(none_);
      case 0x88: return Push(true_);
      case 0x89: return Push(false_);
      case 'J':  // BININT
        if (!TakeLE(4, &v)) return Truncated();
        return PushInt(static_cast<int32_t>(static_cast<uint32_t>(v)));
      case 'K':  // BININT1
        if (!TakeLE(1, &v)) return Truncated();
        return PushInt(static_cast<int64_t>(v));
      case 'M':  // BININT2
        if (!TakeLE(2, &v)) return Truncated();
        return PushInt(static_cast<int64_t>(v));
      case 0x8a: {  // LONG1: n bytes, little-endian two's complement
        uint64_t n = 0;
        if (!TakeLE(1, &n)) return Truncated();
        if (n > 8) return Fail("integer of ", n, " bytes does not fit 64 bits");
        if (n == 0) return PushInt(0);
        if (!TakeLE(static_cast<int>(n), &v)) return Truncated();
        if (n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);  // sign-extend
        return PushInt(static_cast<int64_t>(v));
      }
      case 'G': {  // BINFLOAT: big-endian double
        absl::string_view b;
        if (!Take(8, &b)) return Truncated();
        uint64_t bits = 0;
        for (int k = 0; k < 8; ++k) bits = (bits << 8) | static_cast<uint8_t>(b[k]);
        absl::StatusOr<Node*> n = New(Kind::kFloat);
        if (!n.ok()) return n.status();
        std::memcpy(&(*n)->f, &bits, sizeof(bits));
        return Push(*n);
      }
      case 'X':  // BINUNICODE
        if (!TakeLE(4, &v)) return Truncated();
        return PushString(Kind::kString, v);
      case 0x8c:  // SHORT_BINUNICODE
        if (!TakeLE(1, &v)) return Truncated();
        return PushString(Kind::kString, v);
      case 0x8d:  // BINUNICODE8
        if (!TakeLE(8, &v)) return Truncated();
        return PushString(Kind::kString, v);
      case 'C':  // SHORT_BINBYTES
        if (!TakeLE(1, &v)) return Truncated();
        return PushString(Kind::kBytes, v);
      case 'B':  // BINBYTES
        if (!TakeLE(4, &v)) return Truncated();
        return PushString(Kind::kBytes, v);
      case 0x8e:  // BINBYTES8
        if (!TakeLE(8, &v)) return Truncated();
        return PushString(Kind::kBytes, v);
      case ')': return PushSequence(Kind::kTuple, {});
      case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
        const size_t n = op - 0x84;
        std::vector<Node*> items(n);
        for (size_t k = n; k-- > 0;) {
          absl::StatusOr<Node*> item = Pop();
          if (!item.ok()) return item.status();
          items[k] = *item;
        }
        return PushSequence(Kind::kTuple, std::move(items));
      }
      case 't': case 'l': {  // TUPLE, LIST
        absl::StatusOr<std::vector<Node*>> items = PopMark();
        if (!items.ok()) return items.status();
        return PushSequence(op == 't' ? Kind::kTuple : Kind::kList, *std::move(items));
      }
      case ']': return PushSequence(Kind::kList, {});
      case 'a': {  // APPEND
        absl::StatusOr<Node*> value = Pop();
        if (!value.ok()) return value.status();
        absl::StatusOr<Node*> list = Top();
        if (!list.ok()) return list.status();
        return Append(*list, {*value});
      }
      case 'e': {  // APPENDS
        absl::StatusOr<std::vector<Node*>> values = PopMark();
        if (!values.ok()) return values.status();
        absl::StatusOr<Node*> list = Top();
        if (!list.ok()) return list.status();
        return Append(*list, *values);
      }
      case '}': {
        absl::StatusOr<Node*> dict = NewDict();
        if (!dict.ok()) return dict.status();
        return Push(*dict);
      }
      case 'd': {  // DICT
        absl::StatusOr<std::vector<Node*>> pairs = PopMark();
        if (!pairs.ok()) return pairs.status();
        absl::StatusOr<Node*> dict = NewDict();
        if (!dict.ok()) return dict.status();
        if (absl::Status s = SetItems(*dict, *pairs); !s.ok()) return s;
        return Push(*dict);
      }
      case 's': {  // SETITEM
        absl::StatusOr<Node*> value = Pop();
        if (!value.ok()) return value.status();
        absl::StatusOr<Node*> key = Pop();
        if (!key.ok()) return key.status();
        absl::StatusOr<Node*> dict = Top();
        if (!dict.ok()) return dict.status();
        return SetItems(*dict, {*key, *value});
      }
      case 'u': {  // SETITEMS
        absl::StatusOr<std::vector<Node*>> pairs = PopMark();
        if (!pairs.ok()) return pairs.status();
        absl::StatusOr<Node*> dict = Top();
        if (!dict.ok()) return dict.status();
        return SetItems(*dict, *pairs);
      }
      case 'q': case 'r': case 0x94: {  // BINPUT, LONG_BINPUT, MEMOIZE
        if (op == 'q' && !TakeLE(1, &v)) return Truncated();
        if (op == 'r' && !TakeLE(4, &v)) return Truncated();
        if (op == 0x94) v = memo_.size();
        absl::StatusOr<Node*> top = Top();
        if (!top.ok()) return top.status();
        if (absl::Status s = Slot(); !s.ok()) return s;
        memo_[v] = *top;
        return absl::OkStatus();
      }
      case 'h': case 'j': {  // BINGET, LONG_BINGET
        if (!TakeLE(op == 'h' ? 1 : 4, &v)) return Truncated();
        auto it = memo_.find(v);
        if (it == memo_.end()) return Fail("memo entry ", v, " is read before it is written");
        return Push(it->second);
      }
      case 'c': {  // GLOBAL
        absl::StatusOr<absl::string_view> module = Line();
        if (!module.ok()) return module.status();
        absl::StatusOr<absl::string_view> name = Line();
        if (!name.ok()) return name.status();
        return PushGlobal(*module, *name);
      }
      case 0x93: {  // STACK_GLOBAL
        absl::StatusOr<Node*> name = Pop();
        if (!name.ok()) return name.status();
        absl::StatusOr<Node*> module = Pop();
        if (!module.ok()) return module.status();
        if ((*name)->kind != Kind::kString || (*module)->kind != Kind::kString) {
          return Fail("STACK_GLOBAL needs two strings");
        }
        return PushGlobal((*module)->s, (*name)->s);
      }
      case 'R': return Reduce();
      case 'b': {  // BUILD: only an OrderedDict's attributes (the state dict's _metadata)
        absl::StatusOr<Node*> state = Pop();
        if (!state.ok()) return state.status();
        absl::StatusOr<Node*> target = Top();
        if (!target.ok()) return target.status();
        if ((*target)->kind != Kind::kDict) {
          return Fail("BUILD sets the state of a ", KindName((*target)->kind),
                      " (only a dict's attributes are accepted, and dropped)");
        }
        return absl::OkStatus();
      }
      case 'Q': return PersistentId();
      default: break;
    }
    const char* what = "";
    switch (op) {
      case 'i': what = " (INST: builds an object of any class)"; break;
      case 'o': what = " (OBJ: builds an object of any class)"; break;
      case 0x81: what = " (NEWOBJ: builds an object of any class)"; break;
      case 0x92: what = " (NEWOBJ_EX: builds an object of any class)"; break;
      case 0x82: case 0x83: case 0x84: what = " (EXT: an extension-registry global)"; break;
      case 'P': what = " (PERSID: a text persistent id)"; break;
      case 0x8f: case 0x90: case 0x91: what = " (a set)"; break;
      default: break;
    }
    return Fail(absl::StrFormat("opcode 0x%02x", op), what,
                " is not supported in a checkpoint (tensors and plain containers only)");
  }

  const std::string& name_;
  const absl::string_view in_;
  const TorchBinLimits limits_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  uint64_t slots_ = 0;
  std::deque<Node> arena_;
  Node* const none_ = &arena_.emplace_back();
  Node* const true_ = [this] {
    Node* n = &arena_.emplace_back();
    n->kind = Kind::kBool;
    n->i = 1;
    return n;
  }();
  Node* const false_ = [this] {
    Node* n = &arena_.emplace_back();
    n->kind = Kind::kBool;
    return n;
  }();
  std::vector<Node*> stack_;
  std::vector<size_t> marks_;
  absl::flat_hash_map<uint64_t, Node*> memo_;
  absl::flat_hash_map<std::string, Node*> storages_;
};

// libtorch's zip reader over bytes in memory; reads past the end come back short.
class BufferAdapter : public caffe2::serialize::ReadAdapterInterface {
 public:
  explicit BufferAdapter(absl::string_view bytes) : bytes_(bytes) {}
  size_t size() const override { return bytes_.size(); }
  size_t read(uint64_t pos, void* buf, size_t n, const char* /*what*/) const override {
    if (pos >= bytes_.size()) return 0;
    n = std::min<uint64_t>(n, bytes_.size() - pos);
    std::memcpy(buf, bytes_.data() + pos, n);
    return n;
  }

 private:
  const absl::string_view bytes_;
};

// One tensor of the output.
struct OutTensor {
  std::string name;
  const TensorData* t = nullptr;
  const StorageData* storage = nullptr;
  uint64_t numel = 0;
  uint64_t begin = 0, nbytes = 0;  // in the safetensors data section
};

// Copies the strided view `t` of `storage` (already bounds-checked) to `dst`, contiguous.
void CopyStrided(const uint8_t* storage, size_t element, const TensorData& t, uint8_t* dst) {
  const size_t dims = t.sizes.size();
  if (dims == 0) {
    std::memcpy(dst, storage + t.offset * element, element);
    return;
  }
  const int64_t inner = t.sizes[dims - 1], inner_stride = t.strides[dims - 1];
  std::vector<int64_t> index(dims - 1, 0);
  while (true) {
    int64_t base = t.offset;
    for (size_t d = 0; d + 1 < dims; ++d) base += index[d] * t.strides[d];
    if (inner_stride == 1) {
      std::memcpy(dst, storage + base * element, inner * element);
      dst += inner * element;
    } else {
      for (int64_t j = 0; j < inner; ++j, dst += element) {
        std::memcpy(dst, storage + (base + j * inner_stride) * element, element);
      }
    }
    size_t d = dims - 1;
    while (d > 0) {
      --d;
      if (++index[d] < t.sizes[d]) break;
      index[d] = 0;
      if (d == 0) return;
    }
    if (dims == 1) return;
  }
}

absl::StatusOr<std::string> Convert(const std::string& name, absl::string_view bytes,
                                    const TorchBinLimits& limits) {
  auto fail = [&name](const auto&... args) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", args...));
  };
  if (bytes.size() < 4 || bytes.substr(0, 4) != absl::string_view("PK\x03\x04", 4)) {
    if (!bytes.empty() && static_cast<uint8_t>(bytes[0]) == 0x80) {
      return fail("a legacy (before PyTorch 1.6, not zip) torch.save file, which is not read; "
                  "re-save it with torch.save in PyTorch >= 1.6 or convert it to safetensors");
    }
    return fail("not a torch.save zip archive (no zip signature)");
  }
  caffe2::serialize::PyTorchStreamReader reader(std::make_shared<BufferAdapter>(bytes));
  if (!reader.hasRecord("data.pkl")) {
    return fail("the archive has no data.pkl (not a torch.save checkpoint; a TorchScript "
                "archive is not read)");
  }
  at::DataPtr pickle_ptr;
  size_t pickle_size = 0;
  std::tie(pickle_ptr, pickle_size) = reader.getRecord("data.pkl");
  if (pickle_size > limits.max_pickle_bytes) {
    return fail("data.pkl has ", pickle_size, " bytes, over the limit of ",
                limits.max_pickle_bytes);
  }
  Unpickler unpickler(name, absl::string_view(static_cast<const char*>(pickle_ptr.get()),
                                              pickle_size), limits);
  absl::StatusOr<Node*> root_or = unpickler.Run();
  if (!root_or.ok()) return root_or.status();
  const Node* root = *root_or;
  if (root->kind != Kind::kDict) {
    return fail("the checkpoint is a ", KindName(root->kind), ", not a dict of tensors");
  }
  const Node* state = root;
  bool unwrapped = false;
  if (auto it = root->dict->by_string.find("state_dict"); it != root->dict->by_string.end() &&
      root->dict->entries[it->second].second->kind == Kind::kDict) {
    state = root->dict->entries[it->second].second;
    unwrapped = true;
  }
  const char* where = unwrapped ? "state_dict" : "the state dict";

  std::vector<OutTensor> out;
  bool all_module = !state->dict->entries.empty();
  for (const auto& [key, value] : state->dict->entries) {
    if (key->kind != Kind::kString) {
      return fail("a key of ", where, " is a ", KindName(key->kind), ", not a string");
    }
    if (value->kind != Kind::kTensor) {
      return fail("entry ", Quote(key->s), " of ", where, " is a ", KindName(value->kind),
                  ", not a tensor (only a flat dict of tensors is read",
                  value->kind == Kind::kDict ? "; nested dicts are not" : "", ")");
    }
    OutTensor o;
    o.name = key->s;
    o.t = value->tensor.get();
    o.storage = o.t->storage->storage.get();
    all_module = all_module && o.name.size() > 7 && o.name.compare(0, 7, "module.") == 0;
    out.push_back(std::move(o));
  }
  if (all_module) {
    for (OutTensor& o : out) o.name.erase(0, 7);
  }

  // Every storage's bytes, then every tensor's extent inside its storage.
  absl::flat_hash_map<const StorageData*, uint64_t> storage_bytes;
  absl::flat_hash_map<const StorageData*, std::vector<const OutTensor*>> users;
  std::vector<const StorageData*> storage_order;
  uint64_t total_storage = 0, total_out = 0;
  for (OutTensor& o : out) {
    const std::string what = absl::StrCat("tensor ", Quote(o.name));
    if (o.name.empty() || o.name == "__metadata__") return fail(what, " has a reserved name");
    const StorageType& type = *o.storage->type;
    if (!type.supported) {
      return fail(what, " has dtype ", type.dtype_name, " (torch.", type.name,
                  "); supported: float32, float16, bfloat16 (and int64 buffers)");
    }
    if (!storage_bytes.contains(o.storage)) {
      uint64_t n = 0;
      if (__builtin_mul_overflow(static_cast<uint64_t>(o.storage->numel), type.element_size,
                                 &n) ||
          n > bytes.size()) {
        return fail(what, ": its storage ", Quote(o.storage->key), " declares ",
                    o.storage->numel, " elements of ", type.dtype_name,
                    ", more than the whole file holds (", bytes.size(), " bytes)");
      }
      storage_bytes[o.storage] = n;
      storage_order.push_back(o.storage);
      total_storage += n;
    }
    const TensorData& t = *o.t;
    if (t.sizes.size() != t.strides.size() ||
        t.sizes.size() > static_cast<size_t>(limits.max_dims)) {
      return fail(what, " has ", t.sizes.size(), " sizes and ", t.strides.size(),
                  " strides (at most ", limits.max_dims, " dimensions)");
    }
    uint64_t numel = 1, last = static_cast<uint64_t>(t.offset);
    bool overflow = t.offset < 0;
    for (size_t d = 0; d < t.sizes.size() && !overflow; ++d) {
      if (t.sizes[d] < 0 || t.strides[d] < 0) {
        return fail(what, " has a negative size or stride");
      }
      uint64_t reach = 0;
      overflow = __builtin_mul_overflow(numel, static_cast<uint64_t>(t.sizes[d]), &numel);
      if (t.sizes[d] > 0) {
        overflow = overflow ||
                   __builtin_mul_overflow(static_cast<uint64_t>(t.sizes[d] - 1),
                                          static_cast<uint64_t>(t.strides[d]), &reach) ||
                   __builtin_add_overflow(last, reach, &last);
      }
    }
    uint64_t nbytes = 0;
    if (overflow || __builtin_mul_overflow(numel, type.element_size, &nbytes)) {
      return fail(what, " has an offset, size or stride that overflows");
    }
    if (numel > 0 && last >= static_cast<uint64_t>(o.storage->numel)) {
      return fail(what, " (offset ", t.offset, ", size ", ShapeString(t.sizes), ", stride ",
                  ShapeString(t.strides), ") reaches element ", last, " of its storage ",
                  Quote(o.storage->key), ", which has ", o.storage->numel);
    }
    o.numel = numel;
    o.nbytes = nbytes;
    if (numel > 0) users[o.storage].push_back(&o);
    o.begin = total_out;
    total_out += nbytes;
  }
  // torch.save stores entries uncompressed, so its storages fit in the file; views copied
  // out (tied weights, slices) may repeat bytes, within a bound.
  constexpr uint64_t kSlack = 64ull << 20;
  if (total_storage > bytes.size() || total_out > 4 * total_storage + kSlack) {
    return fail("the storages declare ", total_storage, " bytes and the tensors ", total_out,
                ", more than a ", bytes.size(), "-byte file can hold");
  }

  nlohmann::json header = nlohmann::json::object();
  nlohmann::json metadata = {{"format", "pt"}, {"embedserve.source", "torch.save"}};
  if (unwrapped) metadata["embedserve.unwrapped"] = "state_dict";
  if (all_module) metadata["embedserve.stripped_prefix"] = "module.";
  header["__metadata__"] = metadata;
  for (const OutTensor& o : out) {
    if (header.contains(o.name)) return fail("tensor ", Quote(o.name), " appears twice");
    header[o.name] = {{"dtype", std::string(DtypeName(o.storage->type->dtype))},
                      {"shape", o.t->sizes},
                      {"data_offsets", {o.begin, o.begin + o.nbytes}}};
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception&) {
    return fail("a tensor name is not valid UTF-8");
  }
  while (text.size() % 8 != 0) text.push_back(' ');
  std::string result;
  result.resize(8 + text.size() + total_out);
  uint64_t length = text.size();
  for (int k = 0; k < 8; ++k) result[k] = static_cast<char>((length >> (8 * k)) & 0xff);
  std::memcpy(&result[8], text.data(), text.size());
  uint8_t* data = reinterpret_cast<uint8_t*>(&result[8 + text.size()]);

  // One storage at a time: read its zip entry, check its size, copy out its tensors.
  for (const StorageData* s : storage_order) {
    const std::string record = "data/" + s->key;
    if (!reader.hasRecord(record)) {
      return fail("storage ", Quote(s->key), " has no entry ", Quote(record), " in the archive");
    }
    at::DataPtr ptr;
    size_t size = 0;
    std::tie(ptr, size) = reader.getRecord(record);
    if (size != storage_bytes[s]) {
      return fail("entry ", Quote(record), " holds ", size, " bytes, but its storage declares ",
                  s->numel, " elements of ", s->type->dtype_name, " (", storage_bytes[s],
                  " bytes)");
    }
    for (const OutTensor* o : users[s]) {
      CopyStrided(static_cast<const uint8_t*>(ptr.get()), s->type->element_size, *o->t,
                  data + o->begin);
    }
  }
  return result;
}

}  // namespace

absl::StatusOr<std::string> TorchBinToSafetensors(const std::string& name,
                                                  absl::string_view bytes,
                                                  const TorchBinLimits& limits) {
  try {
    return Convert(name, bytes, limits);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(name, ": out of memory reading it"));
  } catch (const std::exception& e) {
    // libtorch's zip reader (c10::Error): keep the first line, not the backtrace.
    std::string message = e.what();
    if (size_t nl = message.find('\n'); nl != std::string::npos) message.resize(nl);
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": not a readable torch.save zip archive: ", message));
  }
}

absl::StatusOr<std::unique_ptr<TensorArchive>> OpenTorchBin(const std::string& path,
                                                            const TorchBinLimits& limits) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string message = absl::StrCat(path, ": cannot open: ", std::strerror(err));
    if (err == ENOENT || err == ENOTDIR) return absl::NotFoundError(message);
    return absl::InvalidArgumentError(message);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* mapping = nullptr;
  if (size > 0) {
    mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapping == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": cannot memory-map ", size, " bytes: ", std::strerror(err)));
    }
  }
  ::close(fd);
  absl::StatusOr<std::string> converted = TorchBinToSafetensors(
      path, absl::string_view(static_cast<const char*>(mapping), size), limits);
  if (mapping != nullptr) ::munmap(mapping, size);
  if (!converted.ok()) return converted.status();
  return TensorArchive::FromOwnedBuffer(path, *std::move(converted));
}

}  // namespace embedserve::weights
