// Unit tests: the Scheduler's budgets through its facade: retention of
// ended jobs (count, TTL, bytes, owner quotas, a journal nearing its cap),
// the live-bytes budget, and results too big to retain (retention.h has
// the part alone: retention_test).
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "tests/scheduler_fixture.h"

namespace jobd {
namespace {

using ::testing::HasSubstr;

using SchedulerRetentionTest = SchedulerFixture;

TEST_F(SchedulerRetentionTest, RetentionByCountAndTtl) {
  Build({.retention_ttl = absl::Minutes(10), .max_retained = 3}, 1);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(Submit(ok_task_, 0, "k" + std::to_string(i)).job_id);
    Done(ids.back());
  }
  // Only the newest 3 remain; evicted keys are free again.
  EXPECT_EQ(scheduler_->GetJob(ids[0]).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(scheduler_->GetJob(ids[1]).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(scheduler_->GetJob(ids[2]).ok());
  EXPECT_EQ(scheduler_->GetStats().retained(), 3u);
  // The periodic sweep (every sweep_interval of the clock) forgets the
  // ones past the TTL.
  clock_.Advance(absl::Minutes(9));
  EXPECT_EQ(scheduler_->GetStats().retained(), 3u);
  clock_.Advance(absl::Minutes(2));
  EXPECT_EQ(scheduler_->GetStats().retained(), 0u);
  EXPECT_FALSE(scheduler_->GetJob(ids[4]).ok());
  EXPECT_FALSE(Submit(ok_task_, 0, "k4").duplicate);
}

TEST_F(SchedulerRetentionTest, RetainedBytesForgetTheOldestFirst) {
  // Each job holds ~20 KB retained (a 10 KB payload and its echo): three
  // fit in 64 KB, a fourth does not.
  Build({.max_retained_bytes = 64 << 10}, 1);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(SubmitBytes(echo_task_, 10 << 10).job_id);
    Echo(ids.back());
    const Event end = sink_->WaitEnd(ids.back());
    EXPECT_EQ(end.end()->result().payload().size(), 10u << 10);  // Delivered.
  }
  EXPECT_FALSE(Retained(ids[0]));
  EXPECT_FALSE(Retained(ids[1]));
  for (int i = 2; i < 5; ++i) EXPECT_TRUE(Retained(ids[i])) << i;
  const v1::GetStatsResponse stats = scheduler_->GetStats();
  EXPECT_EQ(stats.retained(), 3u);
  EXPECT_GT(stats.retained_bytes(), 60u << 10);
  EXPECT_LE(stats.retained_bytes(), 64u << 10);
  EXPECT_EQ(stats.live_bytes(), 0u);
  // A lower budget applies at the next sweep.
  scheduler_->SetLimits({.max_retained_bytes = 30 << 10});
  scheduler_->SweepRetention();
  EXPECT_EQ(scheduler_->GetStats().retained(), 1u);
  EXPECT_TRUE(Retained(ids[4]));
}

TEST_F(SchedulerRetentionTest, LiveBytesRefuseWhatWouldPassTheBudget) {
  Build({.max_live_bytes = 100 << 10}, 1);
  const Admission a = SubmitBytes(echo_task_, 40 << 10);
  const Admission b = SubmitBytes(echo_task_, 40 << 10);
  ASSERT_TRUE(a.status.ok());
  ASSERT_TRUE(b.status.ok());
  const Admission c = SubmitBytes(echo_task_, 40 << 10);
  EXPECT_EQ(c.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(c.status.message(), HasSubstr("(max-live-bytes)"));
  EXPECT_THAT(c.status.message(), HasSubstr("limit is 100.0 KiB"));
  // A small one still fits.
  EXPECT_TRUE(SubmitBytes(echo_task_, 1 << 10).status.ok());
  EXPECT_GT(scheduler_->GetStats().live_bytes(), 81u << 10);
  for (int i = 0; i < 3; ++i) Echo(executor().running().front());
  // Ended: their specs no longer count as live.
  EXPECT_EQ(scheduler_->GetStats().live(), 0u);
  EXPECT_EQ(scheduler_->GetStats().live_bytes(), 0u);
  EXPECT_TRUE(SubmitBytes(echo_task_, 40 << 10).status.ok());
}

TEST_F(SchedulerRetentionTest, ALiveQuotaRefusesAnOwnersJobsBeyondIt) {
  const OwnerQuota quota{.max_live = 2};
  EXPECT_TRUE(SubmitBytes(echo_task_, 10, "alice", quota).status.ok());
  EXPECT_TRUE(SubmitBytes(echo_task_, 10, "alice", quota).status.ok());
  const Admission third = SubmitBytes(echo_task_, 10, "alice", quota);
  EXPECT_EQ(third.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(third.status.message(), HasSubstr("(quota-max-live)"));
  EXPECT_TRUE(SubmitBytes(echo_task_, 10, "bob", quota).status.ok());
}

TEST_F(SchedulerRetentionTest,
       AnOwnerOverItsByteQuotaLosesItsOwnOldResultsFirst) {
  Build({}, 2);
  const OwnerQuota quota{.max_bytes = 100 << 10};
  // Bob keeps two results; Alice, under a quota, fills hers.
  std::vector<uint64_t> bob;
  for (int i = 0; i < 2; ++i) {  // ~40 KB each retained.
    bob.push_back(SubmitBytes(echo_task_, 20 << 10, "bob", quota).job_id);
    Echo(bob.back());
  }
  std::vector<uint64_t> alice;
  for (int i = 0; i < 4; ++i) {  // ~60 KB each retained.
    const Admission a = SubmitBytes(echo_task_, 30 << 10, "alice", quota);
    ASSERT_TRUE(a.status.ok()) << a.status;
    alice.push_back(a.job_id);
    Echo(alice.back());
  }
  // Only her newest fits in 100 KB; Bob's are untouched.
  EXPECT_FALSE(Retained(alice[0]));
  EXPECT_FALSE(Retained(alice[1]));
  EXPECT_FALSE(Retained(alice[2]));
  EXPECT_TRUE(Retained(alice[3]));
  EXPECT_TRUE(Retained(bob[0]));
  EXPECT_TRUE(Retained(bob[1]));
  // Her unfinished jobs alone may not pass it: refused, naming the quota.
  const Admission a1 = SubmitBytes(echo_task_, 45 << 10, "alice", quota);
  const Admission a2 = SubmitBytes(echo_task_, 45 << 10, "alice", quota);
  ASSERT_TRUE(a1.status.ok());
  ASSERT_TRUE(a2.status.ok());
  EXPECT_FALSE(Retained(alice[3]));  // Made room for them.
  const Admission a3 = SubmitBytes(echo_task_, 45 << 10, "alice", quota);
  EXPECT_EQ(a3.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(a3.status.message(), HasSubstr("caller 'alice'"));
  EXPECT_THAT(a3.status.message(), HasSubstr("(quota-max-bytes)"));
  // Others go on.
  EXPECT_TRUE(SubmitBytes(echo_task_, 10 << 10, "bob", quota).status.ok());
  // Without a quota (admin), nothing is refused or trimmed by it.
  EXPECT_TRUE(SubmitBytes(echo_task_, 200 << 10, "alice").status.ok());
}

TEST_F(SchedulerRetentionTest,
       AResultOverTheRetainedSizeIsDeliveredThenDropped) {
  Build({.max_retained_result_bytes = 4096}, 1);
  const Admission small = SubmitBytes(echo_task_, 1000);
  Echo(small.job_id);
  const Admission big = SubmitBytes(echo_task_, 10000);
  // A caller waiting for it gets it too.
  absl::Notification answered;
  absl::StatusOr<v1::Job> waited;
  scheduler_->WaitJob(big.job_id, clock_.Now() + kWait,
                      [&](absl::StatusOr<v1::Job> job) {
                        waited = std::move(job);
                        answered.Notify();
                      });
  Echo(big.job_id);
  const Event end = sink_->WaitEnd(big.job_id);
  EXPECT_EQ(end.end()->result().payload().size(), 10000u);
  ASSERT_TRUE(answered.HasBeenNotified());
  ASSERT_TRUE(waited.ok());
  EXPECT_EQ(waited->result().payload().size(), 10000u);
  // Later: the job, without its result.
  auto job = scheduler_->GetJob(big.job_id);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state(), v1::JOB_STATE_SUCCEEDED);
  EXPECT_TRUE(job->result().dropped());
  EXPECT_TRUE(job->result().payload().empty());
  EXPECT_LT(scheduler_->GetStats().retained_bytes(), 2 * 10000u);
  auto kept = scheduler_->GetJob(small.job_id);
  ASSERT_TRUE(kept.ok());
  EXPECT_FALSE(kept->result().dropped());
  EXPECT_EQ(kept->result().payload().size(), 1000u);
}

// Polls `done` (a journal's state, changed by its writer thread) every
// 5 ms for at most `limit`; true once it holds.
bool WaitFor(const std::function<bool()>& done,
             absl::Duration limit = RecordingSink::kWait) {
  const absl::Time end = absl::Now() + limit;
  for (int i = 0; i < 100000; ++i) {
    if (done()) return true;
    if (absl::Now() >= end) return false;
    absl::SleepFor(absl::Milliseconds(5));  // The journal has no wait.
  }
  return false;
}

TEST_F(SchedulerRetentionTest,
       WithAJournalNearlyFullEndedJobsAreForgottenEarly) {
  // A 4 MiB journal; each job keeps ~200 KB in it (spec and result). The
  // sweeps are this test's.
  BuildWithJournal(1, {.max_bytes = 4 << 20},
                   {.sweep_interval = absl::Hours(1)});
  std::vector<uint64_t> ids;
  for (int i = 0; i < 19; ++i) {  // ~3.9 MB: past 7/8 of the cap.
    ids.push_back(SubmitBytes(echo_task_, 100 << 10).job_id);
    AwaitStart(ids.back());
    Echo(ids.back());
  }
  ASSERT_TRUE(journal_->Flush(absl::Now() + kWait));
  EXPECT_GT(journal_->usage().used_bytes, (4u << 20) / 8 * 7);
  scheduler_->SweepRetention();
  // The oldest went, down to 3/4 of the cap; the newest stay.
  EXPECT_FALSE(Retained(ids[0]));
  EXPECT_TRUE(Retained(ids.back()));
  ASSERT_TRUE(journal_->Flush(absl::Now() + kWait));
  EXPECT_LE(journal_->usage().used_bytes, (4u << 20) / 4 * 3);
  // Past the cap, writes fail (new jobs are refused) until the sweep frees
  // room: not for the whole retention time.
  for (int i = 0; i < 12; ++i) {
    const Admission a = SubmitBytes(echo_task_, 100 << 10);
    if (!a.status.ok()) break;
    ids.push_back(a.job_id);
    // It starts once its claim is durable, if the journal can write it.
    if (executor().AwaitStart(a.job_id, absl::Seconds(2))) Echo(a.job_id);
  }
  ASSERT_TRUE(WaitFor([&] { return !journal_->accepting(); }));
  EXPECT_TRUE(journal_->usage().full);
  bool accepting = false;
  for (int i = 0; i < 20 && !accepting; ++i) {
    scheduler_->SweepRetention();
    accepting =
        WaitFor([&] { return journal_->accepting(); }, absl::Milliseconds(500));
  }
  EXPECT_TRUE(accepting);
  EXPECT_TRUE(SubmitBytes(echo_task_, 100 << 10).status.ok());
}

}  // namespace
}  // namespace jobd
