#include "server/cluster/redis_value.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace jobd::cluster {

std::string RedisValue::DebugString() const {
  switch (type) {
    case Type::kNil:
      return "nil";
    case Type::kInteger:
      return absl::StrCat(integer);
    case Type::kString:
      return absl::StrCat("\"", absl::CHexEscape(str), "\"");
    case Type::kStatus:
      return absl::StrCat("+", absl::CHexEscape(str));
    case Type::kError:
      return absl::StrCat("-", absl::CHexEscape(str));
    case Type::kArray: {
      std::string out = "[";
      for (size_t i = 0; i < elements.size(); ++i) {
        if (i > 0) out += ", ";
        out += elements[i].DebugString();
      }
      return out + "]";
    }
  }
  return "?";
}

}  // namespace jobd::cluster
