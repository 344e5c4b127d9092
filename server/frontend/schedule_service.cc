// The schedule RPCs of JobServiceImpl (service.h): CreateSchedule,
// GetSchedule, ListSchedules, PauseSchedule, ResumeSchedule and
// DeleteSchedule, over the daemon's ScheduleRunner
// (server/schedules/runner.h). Creating, pausing, resuming and deleting
// need the submit role; reading, submit or read. A caller that is not
// admin sees and touches only its own schedules. A change is answered once
// its journal record is durable (UNAVAILABLE if it cannot be).
#include <string>

#include "absl/strings/str_cat.h"
#include "server/frontend/service.h"
#include "spdlog/spdlog.h"

namespace jobd {
namespace {

// Answers once `ticket` is durable.
grpc::ServerUnaryReactor* ReplyDurable(grpc::CallbackServerContext* context,
                                       Scheduler& scheduler, uint64_t ticket) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  scheduler.WhenDurable(
      ticket,
      [&scheduler, reactor](bool durable) {
        reactor->Finish(
            durable ? grpc::Status::OK
                    : ToGrpc(absl::UnavailableError(absl::StrCat(
                          "the schedule was changed here, but that is not "
                          "durable yet: ",
                          scheduler.NotDurable().message()))));
      },
      Journal::Wait::kFailFast);
  return reactor;
}

absl::Status NoSchedules() {
  return absl::FailedPreconditionError("this jobd has no schedules");
}

}  // namespace

grpc::ServerUnaryReactor* JobServiceImpl::CreateSchedule(
    grpc::CallbackServerContext* context,
    const v1::CreateScheduleRequest* request,
    v1::CreateScheduleResponse* response) {
  absl::StatusOr<Caller> caller =
      Authorize(*context, kRoleSubmit, "CreateSchedule");
  if (!caller.ok()) return Reply(context, caller.status());
  if (schedules_ == nullptr) return Reply(context, NoSchedules());
  auto created = schedules_->Create(request->id(), request->spec(),
                                    request->paused(), caller->name);
  if (!created.ok()) return Reply(context, created.status());
  *response->mutable_schedule() = std::move(created->value.first);
  response->set_existed(created->value.second);
  if (!response->existed()) {
    spdlog::info("schedule '{}' created by '{}'", request->id(), caller->name);
  }
  return ReplyDurable(context, scheduler_, created->ticket);
}

grpc::ServerUnaryReactor* JobServiceImpl::GetSchedule(
    grpc::CallbackServerContext* context, const v1::GetScheduleRequest* request,
    v1::Schedule* response) {
  absl::StatusOr<Caller> caller =
      Authorize(*context, kRoleSubmit | kRoleRead, "GetSchedule");
  if (!caller.ok()) return Reply(context, caller.status());
  if (schedules_ == nullptr) return Reply(context, NoSchedules());
  absl::StatusOr<v1::Schedule> s = schedules_->Get(
      request->id(), caller->admin() ? std::string_view() : caller->name);
  if (!s.ok()) return Reply(context, s.status());
  *response = *std::move(s);
  return Reply(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* JobServiceImpl::ListSchedules(
    grpc::CallbackServerContext* context,
    const v1::ListSchedulesRequest* request,
    v1::ListSchedulesResponse* response) {
  absl::StatusOr<Caller> caller =
      Authorize(*context, kRoleSubmit | kRoleRead, "ListSchedules");
  if (!caller.ok()) return Reply(context, caller.status());
  if (schedules_ == nullptr) return Reply(context, NoSchedules());
  for (v1::Schedule& s :
       schedules_->List(caller->admin() ? std::string_view() : caller->name)) {
    *response->add_schedules() = std::move(s);
  }
  return Reply(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* JobServiceImpl::PauseSchedule(
    grpc::CallbackServerContext* context,
    const v1::PauseScheduleRequest* request, v1::Schedule* response) {
  absl::StatusOr<Caller> caller =
      Authorize(*context, kRoleSubmit, "PauseSchedule");
  if (!caller.ok()) return Reply(context, caller.status());
  if (schedules_ == nullptr) return Reply(context, NoSchedules());
  auto changed = schedules_->SetPaused(
      request->id(), caller->admin() ? std::string_view() : caller->name, true);
  if (!changed.ok()) return Reply(context, changed.status());
  *response = std::move(changed->value);
  return ReplyDurable(context, scheduler_, changed->ticket);
}

grpc::ServerUnaryReactor* JobServiceImpl::ResumeSchedule(
    grpc::CallbackServerContext* context,
    const v1::ResumeScheduleRequest* request, v1::Schedule* response) {
  absl::StatusOr<Caller> caller =
      Authorize(*context, kRoleSubmit, "ResumeSchedule");
  if (!caller.ok()) return Reply(context, caller.status());
  if (schedules_ == nullptr) return Reply(context, NoSchedules());
  auto changed = schedules_->SetPaused(
      request->id(), caller->admin() ? std::string_view() : caller->name,
      false);
  if (!changed.ok()) return Reply(context, changed.status());
  *response = std::move(changed->value);
  return ReplyDurable(context, scheduler_, changed->ticket);
}

grpc::ServerUnaryReactor* JobServiceImpl::DeleteSchedule(
    grpc::CallbackServerContext* context,
    const v1::DeleteScheduleRequest* request,
    v1::DeleteScheduleResponse* response) {
  absl::StatusOr<Caller> caller =
      Authorize(*context, kRoleSubmit, "DeleteSchedule");
  if (!caller.ok()) return Reply(context, caller.status());
  if (schedules_ == nullptr) return Reply(context, NoSchedules());
  auto deleted = schedules_->Delete(
      request->id(), caller->admin() ? std::string_view() : caller->name);
  if (!deleted.ok()) return Reply(context, deleted.status());
  response->set_existed(deleted->value);
  if (deleted->value) {
    spdlog::info("schedule '{}' deleted by '{}'", request->id(), caller->name);
  }
  return ReplyDurable(context, scheduler_, deleted->ticket);
}

}  // namespace jobd
