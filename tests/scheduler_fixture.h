// SchedulerFixture: a Scheduler on a ManualClock with a FakeExecutor as its
// thread pool (and, for some tests, a real journal in a temporary
// directory), for the scheduler's unit tests (scheduler_*_test.cc). The
// test starts and ends jobs itself through executor(): no threads run
// tasks, time moves only with clock_.Advance(), and without a journal
// every event arrives during the call that caused it.
//
// Thread-safety: the test's thread drives it; with a journal, claimed
// jobs start on the journal's thread (FakeExecutor is thread-safe).
// Ownership: the fixture owns the clock, journal and scheduler (which owns
// the fake executor); TearDown destroys the scheduler first.
#ifndef JOBD_TESTS_SCHEDULER_FIXTURE_H_
#define JOBD_TESTS_SCHEDULER_FIXTURE_H_

#include <stdlib.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/scheduler/scheduler.h"
#include "tests/fakes/fake_executor.h"
#include "tests/fakes/recording_sink.h"
#include "workers/sdk/task_registry.h"

namespace jobd {

class SchedulerFixture : public ::testing::Test {
 protected:
  static constexpr absl::Duration kWait = RecordingSink::kWait;

  void SetUp() override { Build({}, 1); }
  void TearDown() override {
    scheduler_.reset();
    journal_.reset();
    if (!journal_dir_.empty()) std::filesystem::remove_all(journal_dir_);
  }

  // A fresh scheduler with `options` and a fake thread pool of `slots`
  // slots taking chunks of up to `max_chunk` jobs.
  void Build(SchedulerOptions options, int slots, int max_chunk = 1) {
    scheduler_.reset();
    scheduler_ = std::make_unique<Scheduler>(options, clock_, journal_.get());
    auto fake = std::make_unique<FakeExecutor>(
        v1::EXECUTOR_THREAD, slots,
        scheduler_->listener_for(v1::EXECUTOR_THREAD), max_chunk);
    executor_ = fake.get();
    scheduler_->AddExecutor(std::move(fake));
  }
  // The same with a journal (in a fresh temporary directory).
  void BuildWithJournal(int slots, JournalOptions journal_options = {},
                        SchedulerOptions options = {}) {
    scheduler_.reset();
    char dir[] = "/tmp/jobd-scheduler-test.XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    journal_dir_ = dir;
    Recovered recovered;
    journal_options.path = journal_dir_ + "/jobd.db";
    auto journal = Journal::Open(journal_options, &recovered);
    ASSERT_TRUE(journal.ok()) << journal.status();
    journal_ = *std::move(journal);
    Build(options, slots);
  }

  FakeExecutor& executor() { return *executor_; }

  // A task of `name` (IO-bound, any arguments); the fake never runs it.
  static TaskDef Def(std::string name) {
    return {.name = std::move(name),
            .default_kind = v1::JOB_KIND_IO_BOUND,
            .variadic = true,
            .run = [](TaskContext&) -> absl::StatusOr<TaskOutput> {
              return TaskOutput{};
            }};
  }

  // Submits one job of `task` with priority; returns its admission.
  Admission Submit(const TaskDef& task, int priority = 0, std::string key = "",
                   absl::Duration timeout = absl::ZeroDuration(),
                   uint32_t chunksize = 0) {
    auto spec = std::make_shared<v1::JobSpec>();
    spec->set_task(task.name);
    spec->set_kind(v1::JOB_KIND_IO_BOUND);
    spec->set_priority(priority);
    spec->set_idempotency_key(key);
    spec->set_chunksize(chunksize);
    if (timeout > absl::ZeroDuration()) {
      spec->mutable_timeout()->set_nanos(
          static_cast<int32_t>(absl::ToInt64Nanoseconds(timeout)));
    }
    std::vector<NewJob> jobs(1);
    jobs[0].task = &task;
    jobs[0].spec = std::move(spec);
    jobs[0].args = TaskArgs();
    jobs[0].tag = next_tag_++;
    std::vector<Admission> out;
    scheduler_->Submit(jobs, Subscriber{sink_, 0, kAllEvents}, out);
    return out.at(0);
  }
  // Submits one job of ok_task_ whose spec `edit` changes.
  Admission SubmitWith(std::function<void(v1::JobSpec&)> edit) {
    auto spec = std::make_shared<v1::JobSpec>();
    spec->set_task(ok_task_.name);
    spec->set_kind(v1::JOB_KIND_IO_BOUND);
    edit(*spec);
    std::vector<NewJob> jobs(1);
    jobs[0].task = &ok_task_;
    jobs[0].spec = std::move(spec);
    jobs[0].tag = next_tag_++;
    std::vector<Admission> out;
    scheduler_->Submit(jobs, Subscriber{sink_, 0, kAllEvents}, out);
    return out.at(0);
  }
  v1::JobState State(uint64_t id) { return scheduler_->GetJob(id)->state(); }
  // Submits one job of `task` whose payload is `payload` bytes, as `owner`
  // within `quota`.
  Admission SubmitBytes(const TaskDef& task, size_t payload,
                        std::string owner = "", OwnerQuota quota = {}) {
    auto spec = std::make_shared<v1::JobSpec>();
    spec->set_task(task.name);
    spec->set_kind(v1::JOB_KIND_IO_BOUND);
    spec->set_payload(std::string(payload, 'p'));
    std::vector<NewJob> jobs(1);
    jobs[0].task = &task;
    jobs[0].args = *TaskRegistry::Bind(task, spec);
    jobs[0].spec = std::move(spec);
    jobs[0].tag = next_tag_++;
    jobs[0].owner = std::move(owner);
    std::vector<Admission> out;
    scheduler_->Submit(jobs, Subscriber{sink_, 0, kAllEvents}, out, quota);
    return out.at(0);
  }

  // Ends running job `id` with "done" (as the task "ok" returns).
  void Done(uint64_t id) {
    TaskOutput out;
    out.value.set_string_value("done");
    executor().Succeed(id, std::move(out));
  }
  // Ends running job `id` with its own payload (as "echo" returns).
  void Echo(uint64_t id) {
    TaskOutput out;
    out.payload = executor().run(id)->spec->payload();
    executor().Succeed(id, std::move(out));
  }
  // Ends each running job with "done" until none runs (ending one may
  // start the next).
  void DoneAll() {
    for (int i = 0; i < 100000 && !executor().running().empty(); ++i) {
      Done(executor().running().front());
    }
  }
  // With a journal: waits until job `id` was handed to the executor (its
  // claim became durable on the journal's thread).
  void AwaitStart(uint64_t id) {
    EXPECT_TRUE(executor().AwaitStart(id, kWait)) << "job " << id;
  }
  bool Retained(uint64_t id) { return scheduler_->GetJob(id).ok(); }

  ManualClock clock_{absl::FromUnixSeconds(1767225600)};  // 2026-01-01.
  std::shared_ptr<RecordingSink> sink_ = std::make_shared<RecordingSink>();
  std::unique_ptr<Journal> journal_;  // BuildWithJournal only.
  std::string journal_dir_;
  std::unique_ptr<Scheduler> scheduler_;
  FakeExecutor* executor_ = nullptr;  // Owned by scheduler_.
  uint64_t next_tag_ = 1;

  const TaskDef ok_task_ = Def("ok");
  const TaskDef gate_task_ = Def("gate");
  const TaskDef echo_task_ = Def("echo");
};

}  // namespace jobd

#endif  // JOBD_TESTS_SCHEDULER_FIXTURE_H_
