// Unit tests of the push callbacks' parts (server/callbacks): the HMAC
// against RFC 4231's vectors, the signature header, the URL allowlist, the
// retry delays and verdicts, and the dispatcher's bounds and statuses.
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/callbacks/callback_url.h"
#include "server/callbacks/dispatcher.h"
#include "server/callbacks/signature.h"

namespace jobd::callbacks {
namespace {

using ::testing::HasSubstr;

TEST(SignatureTest, HmacSha256MatchesRfc4231) {
  // RFC 4231, test cases 1 and 2.
  EXPECT_EQ(HmacSha256Hex(std::string(20, '\x0b'), "Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  EXPECT_EQ(HmacSha256Hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(SignatureTest, TheHeaderSignsTheTimestampADotAndTheBody) {
  EXPECT_EQ(SignatureHeader("Jefe", 1700000000, "{\"a\":1}"),
            "sha256=" + HmacSha256Hex("Jefe", "1700000000.{\"a\":1}"));
  // Another timestamp, another signature: a replay with a fresh timestamp
  // does not verify.
  EXPECT_NE(SignatureHeader("Jefe", 1700000001, "{\"a\":1}"),
            SignatureHeader("Jefe", 1700000000, "{\"a\":1}"));
}

TEST(CallbackUrlTest, AcceptsOnlyUrlsUnderAPrefix) {
  const std::vector<std::string> prefixes = {"https://hooks.example/jobd/",
                                             "http://127.0.0.1:8080/"};
  EXPECT_TRUE(
      CheckCallbackUrl("https://hooks.example/jobd/x?y=1", prefixes).ok());
  EXPECT_TRUE(CheckCallbackUrl("http://127.0.0.1:8080/", prefixes).ok());
  for (const std::string& url :
       {std::string("https://hooks.example/other"),
        std::string("https://hooks.example.evil/jobd/"),
        std::string("http://127.0.0.1:8081/"),
        std::string("http://127.0.0.1:80800/")}) {
    absl::Status s = CheckCallbackUrl(url, prefixes);
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << url;
    EXPECT_THAT(std::string(s.message()), HasSubstr("spec.callback_url"));
    EXPECT_THAT(std::string(s.message()), HasSubstr("none of"));
  }
}

TEST(CallbackUrlTest, RefusalsNameTheField) {
  const std::vector<std::string> prefixes = {"http://127.0.0.1:8080/"};
  auto message = [&](const std::string& url) {
    return std::string(CheckCallbackUrl(url, prefixes).message());
  };
  EXPECT_THAT(message("ftp://127.0.0.1:8080/"),
              HasSubstr("spec.callback_url: 'ftp://127.0.0.1:8080/' is not an "
                        "http:// or https:// URL"));
  EXPECT_THAT(message("http://127.0.0.1:8080/" + std::string(3000, 'a')),
              HasSubstr("spec.callback_url: 3022 bytes, more than the 2048"));
  EXPECT_THAT(message("http://127.0.0.1:8080/a b"),
              HasSubstr("spec.callback_url: has spaces"));
  EXPECT_THAT(
      std::string(CheckCallbackUrl("http://127.0.0.1:8080/", {}).message()),
      HasSubstr("callbacks are off"));
}

TEST(CallbackUrlTest, PrefixesMustEndTheirHost) {
  EXPECT_TRUE(CheckPrefixes({"https://hooks.example/", "http://h:1/a/"}).ok());
  for (const std::string& bad :
       {std::string("https://hooks.example"), std::string("ftp://x/"),
        std::string("http:///"), std::string("http://user@h/"),
        std::string("http://h/a b")}) {
    absl::Status s = CheckPrefixes({bad});
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << bad;
    EXPECT_THAT(std::string(s.message()),
                HasSubstr("--callback-allowed-prefixes"));
  }
}

TEST(RetryTest, DelaysDoubleUpToTheCapWithJitter) {
  CallbackOptions o;
  o.first_backoff = absl::Seconds(1);
  o.max_backoff = absl::Seconds(10);
  // unit 1.0 (the top of the range): the full delay.
  EXPECT_EQ(RetryDelay(1, o, 1.0), absl::Seconds(1));
  EXPECT_EQ(RetryDelay(2, o, 1.0), absl::Seconds(2));
  EXPECT_EQ(RetryDelay(3, o, 1.0), absl::Seconds(4));
  EXPECT_EQ(RetryDelay(4, o, 1.0), absl::Seconds(8));
  EXPECT_EQ(RetryDelay(5, o, 1.0), absl::Seconds(10));
  EXPECT_EQ(RetryDelay(1000, o, 1.0), absl::Seconds(10));
  // The jitter takes it down to half at most.
  EXPECT_EQ(RetryDelay(3, o, 0.0), absl::Seconds(2));
  EXPECT_EQ(RetryDelay(3, o, 0.5), absl::Seconds(3));
}

TEST(RetryTest, OnlyTransientAnswersAreRetried) {
  for (int code : {200, 201, 204, 299}) {
    EXPECT_EQ(Classify(code), Verdict::kDelivered) << code;
  }
  for (int code : {408, 429, 500, 502, 503, 504}) {
    EXPECT_EQ(Classify(code), Verdict::kRetry) << code;
  }
  for (int code : {301, 302, 400, 401, 403, 404, 410, 413}) {
    EXPECT_EQ(Classify(code), Verdict::kGiveUp) << code;
  }
  EXPECT_EQ(Classify(absl::UnavailableError("connection refused")),
            Verdict::kRetry);
  EXPECT_EQ(Classify(absl::DeadlineExceededError("timeout")), Verdict::kRetry);
  EXPECT_EQ(Classify(absl::InvalidArgumentError("bad URL")), Verdict::kGiveUp);
}

Event Ended(uint64_t id, v1::JobState state) {
  Event e;
  e.sequence = id * 10;
  e.job_id = id;
  e.type = state == v1::JOB_STATE_SUCCEEDED ? v1::EVENT_TYPE_SUCCEEDED
                                            : v1::EVENT_TYPE_FAILED;
  e.time = absl::FromUnixSeconds(1700000000);
  auto end = std::make_shared<JobEnd>();
  end->state = state;
  if (state == v1::JOB_STATE_SUCCEEDED) {
    end->mutable_result().mutable_value()->set_string_value("ok");
  } else {
    end->mutable_error().set_message("boom");
  }
  e.set_end(std::move(end));
  return e;
}

TEST(DispatcherTest, OverItsBoundsAJobsCallbackIsDroppedAndCounted) {
  CallbackOptions o;
  o.secret = "0123456789abcdef";
  o.max_pending = 2;
  CallbackDispatcher d(o, /*journal=*/nullptr);
  for (uint64_t id : {1, 2, 3}) {
    CallbackRecord r = d.OnEnded(id, "http://127.0.0.1:9/",
                                 Ended(id, v1::JOB_STATE_SUCCEEDED));
    EXPECT_EQ(r.job_id, id);
    EXPECT_EQ(r.url, "http://127.0.0.1:9/");
    if (id <= 2) {
      EXPECT_EQ(r.state, v1::CALLBACK_STATE_PENDING);
      EXPECT_FALSE(r.event.empty());
    } else {
      EXPECT_EQ(r.state, v1::CALLBACK_STATE_DROPPED);
      EXPECT_THAT(r.last_error, HasSubstr("--callback-max-pending"));
    }
  }
  v1::GetStatsResponse stats;
  d.AddStats(&stats);
  EXPECT_EQ(stats.callbacks().pending(), 2u);
  EXPECT_EQ(stats.callbacks().dropped(), 1u);
  v1::Job job;
  job.set_state(v1::JOB_STATE_SUCCEEDED);
  d.Describe(3, &job);
  EXPECT_EQ(job.callback().state(), v1::CALLBACK_STATE_DROPPED);
  d.Describe(1, &job);
  EXPECT_EQ(job.callback().state(), v1::CALLBACK_STATE_PENDING);
  // A job that has not ended is waiting; an ended one unknown here, unknown.
  job.set_state(v1::JOB_STATE_RUNNING);
  d.Describe(7, &job);
  EXPECT_EQ(job.callback().state(), v1::CALLBACK_STATE_WAITING);
}

TEST(DispatcherTest, TheBytesBoundCountsTheEvents) {
  CallbackOptions o;
  o.secret = "0123456789abcdef";
  o.max_pending_bytes = 1;  // Less than any event.
  CallbackDispatcher d(o, nullptr);
  EXPECT_EQ(
      d.OnEnded(1, "http://127.0.0.1:9/", Ended(1, v1::JOB_STATE_FAILED)).state,
      v1::CALLBACK_STATE_DROPPED);
}

TEST(DispatcherTest, TheBodyIsTheEventInProtobufsJsonMapping) {
  CallbackOptions o;
  o.secret = "0123456789abcdef";
  CallbackDispatcher d(o, nullptr);
  CallbackRecord r =
      d.OnEnded(42, "http://127.0.0.1:9/", Ended(42, v1::JOB_STATE_FAILED));
  absl::StatusOr<std::string> json = EventJson(r.event);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_THAT(*json, HasSubstr("\"jobId\":\"42\""));
  EXPECT_THAT(*json, HasSubstr("\"type\":\"EVENT_TYPE_FAILED\""));
  EXPECT_THAT(*json, HasSubstr("\"message\":\"boom\""));
  EXPECT_THAT(*json, HasSubstr("\"time\":\"2023-11-14T22:13:20Z\""));
}

}  // namespace
}  // namespace jobd::callbacks
