#include "tests/redis/redis_client.h"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace jobd::testing {
namespace {

RedisReply Own(const redisReply& r) {
  RedisReply out;
  switch (r.type) {
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::kInteger;
      out.integer = r.integer;
      break;
    case REDIS_REPLY_STRING:
      out.type = RedisReply::Type::kString;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = RedisReply::Type::kStatus;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::kArray;
      for (size_t i = 0; i < r.elements; ++i) {
        out.elements.push_back(Own(*r.element[i]));
      }
      break;
    default:
      break;  // Nil.
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RedisClient>> RedisClient::Connect(
    const std::string& path, absl::Duration timeout) {
  const timeval tv = absl::ToTimeval(timeout);
  redisContext* ctx = redisConnectUnixWithTimeout(path.c_str(), tv);
  if (ctx == nullptr) return absl::InternalError("redis: out of memory");
  if (ctx->err != 0) {
    absl::Status s =
        absl::UnavailableError(absl::StrCat("redis ", path, ": ", ctx->errstr));
    redisFree(ctx);
    return s;
  }
  redisSetTimeout(ctx, tv);
  return std::unique_ptr<RedisClient>(new RedisClient(ctx));
}

RedisClient::~RedisClient() { redisFree(ctx_); }

absl::StatusOr<RedisReply> RedisClient::Query(
    const std::vector<std::string>& argv) {
  std::vector<const char*> args;
  std::vector<size_t> lens;
  for (const std::string& a : argv) {
    args.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* r = static_cast<redisReply*>(redisCommandArgv(
      ctx_, static_cast<int>(args.size()), args.data(), lens.data()));
  if (r == nullptr) {
    return absl::UnavailableError(absl::StrCat("redis: ", ctx_->errstr));
  }
  if (r->type == REDIS_REPLY_ERROR) {
    absl::Status s = absl::InternalError(std::string(r->str, r->len));
    freeReplyObject(r);
    return s;
  }
  RedisReply out = Own(*r);
  freeReplyObject(r);
  return out;
}

absl::StatusOr<double> RedisClient::InfoNumber(const std::string& section,
                                               const std::string& name) {
  absl::StatusOr<RedisReply> info = Query({"INFO", section});
  if (!info.ok()) return info.status();
  for (absl::string_view line : absl::StrSplit(info->str, "\r\n")) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(line, absl::MaxSplits(':', 1));
    double v = 0;
    if (kv.first == name && absl::SimpleAtod(kv.second, &v)) return v;
  }
  return absl::NotFoundError(absl::StrCat("INFO ", section, ": no ", name));
}

}  // namespace jobd::testing
