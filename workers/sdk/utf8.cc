#include "workers/sdk/utf8.h"

#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

namespace jobd {
namespace {

bool IsContinuation(unsigned char c) { return (c & 0xC0) == 0x80; }

// Length (1..4) of the valid character at the front of `s`, 0 if the front
// byte does not start one (RFC 3629 section 4's table).
size_t CharLength(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  const unsigned char c = p[0];
  if (c < 0x80) return 1;
  auto in = [](unsigned char b, unsigned char lo, unsigned char hi) {
    return b >= lo && b <= hi;
  };
  if (in(c, 0xC2, 0xDF)) return n >= 2 && IsContinuation(p[1]) ? 2 : 0;
  if (in(c, 0xE0, 0xEF)) {
    if (n < 3 || !IsContinuation(p[2])) return 0;
    const unsigned char lo = c == 0xE0 ? 0xA0 : 0x80;
    const unsigned char hi = c == 0xED ? 0x9F : 0xBF;  // No surrogates.
    return in(p[1], lo, hi) ? 3 : 0;
  }
  if (in(c, 0xF0, 0xF4)) {
    if (n < 4 || !IsContinuation(p[2]) || !IsContinuation(p[3])) return 0;
    const unsigned char lo = c == 0xF0 ? 0x90 : 0x80;
    const unsigned char hi = c == 0xF4 ? 0x8F : 0xBF;  // <= U+10FFFF.
    return in(p[1], lo, hi) ? 4 : 0;
  }
  return 0;  // A continuation byte, C0/C1 (overlong) or F5..FF.
}

// Offset of the first byte of `s` that is not part of a valid character,
// or s.size().
size_t FirstInvalid(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    // ASCII runs 8 bytes at a time.
    while (i + 8 <= s.size()) {
      uint64_t word;
      std::memcpy(&word, s.data() + i, 8);
      if ((word & 0x8080808080808080ULL) != 0) break;
      i += 8;
    }
    if (i >= s.size()) break;
    const size_t len = CharLength(s.substr(i));
    if (len == 0) return i;
    i += len;
  }
  return s.size();
}

void AppendValid(std::string_view s, size_t from, std::string* out) {
  size_t i = from;
  while (i < s.size()) {
    const size_t len = CharLength(s.substr(i));
    if (len == 0) {
      out->append(kReplacementChar);
      ++i;
    } else {
      out->append(s.data() + i, len);
      i += len;
    }
  }
}

}  // namespace

bool IsValidUtf8(std::string_view s) { return FirstInvalid(s) == s.size(); }

std::string_view Utf8Prefix(std::string_view s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  size_t cut = max_bytes;
  // Back to the first byte of the character the cut falls into (a character
  // is at most 4 bytes: its lead is at most 3 bytes back).
  for (int back = 0; back < 3 && cut > 0 &&
                     IsContinuation(static_cast<unsigned char>(s[cut]));
       ++back) {
    --cut;
  }
  if (IsContinuation(static_cast<unsigned char>(s[cut]))) cut = max_bytes;
  return s.substr(0, cut);
}

std::string MakeValidUtf8(std::string_view s) {
  const size_t bad = FirstInvalid(s);
  if (bad == s.size()) return std::string(s);
  std::string out;
  out.reserve(s.size() + 16);
  out.append(s.data(), bad);
  AppendValid(s, bad, &out);
  return out;
}

bool MakeValidUtf8(std::string* s) {
  const size_t bad = FirstInvalid(*s);
  if (bad == s->size()) return false;
  std::string out;
  out.reserve(s->size() + 16);
  out.append(s->data(), bad);
  AppendValid(*s, bad, &out);
  *s = std::move(out);
  return true;
}

std::string ClipUtf8(std::string_view s, size_t max_bytes) {
  constexpr std::string_view kMore = "...";
  const std::string_view head = Utf8Prefix(s, max_bytes);
  std::string text = MakeValidUtf8(head);
  if (head.size() == s.size() && text.size() <= max_bytes) return text;
  if (max_bytes < kMore.size()) {
    return std::string(Utf8Prefix(text, max_bytes));
  }
  std::string out(Utf8Prefix(text, max_bytes - kMore.size()));
  out.append(kMore);
  return out;
}

std::string PercentEncodeInvalid(std::string_view s, bool* escaped) {
  const bool valid = IsValidUtf8(s);
  if (escaped != nullptr) *escaped = !valid;
  return valid ? std::string(s) : PercentEncode(s);
}

std::string PercentEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() * 3);
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c <= 0x7E && c != '%') {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    }
  }
  return out;
}

bool MakeValidUtf8(google::protobuf::Value* v) {
  switch (v->kind_case()) {
    case google::protobuf::Value::kStringValue:
      return MakeValidUtf8(v->mutable_string_value());
    case google::protobuf::Value::kListValue: {
      bool changed = false;
      for (google::protobuf::Value& item :
           *v->mutable_list_value()->mutable_values()) {
        changed |= MakeValidUtf8(&item);
      }
      return changed;
    }
    case google::protobuf::Value::kStructValue: {
      bool changed = false;
      auto& fields = *v->mutable_struct_value()->mutable_fields();
      std::vector<std::string> bad_keys;
      for (auto& [key, value] : fields) {
        if (!IsValidUtf8(key)) bad_keys.push_back(key);
        changed |= MakeValidUtf8(&value);
      }
      for (const std::string& key : bad_keys) {
        auto it = fields.find(key);
        google::protobuf::Value value = std::move(it->second);
        fields.erase(it);
        fields[MakeValidUtf8(key)] = std::move(value);
      }
      return changed || !bad_keys.empty();
    }
    default:
      return false;
  }
}

}  // namespace jobd
