#include "server/journal/journal_log.h"

#include <algorithm>
#include <limits>

#include "google/protobuf/io/coded_stream.h"
#include "jobd/journal/log.pb.h"
#include "server/journal/journal_store.h"
#include "spdlog/fmt/fmt.h"

namespace jobd {
namespace {

using google::protobuf::io::CodedInputStream;
using google::protobuf::io::CodedOutputStream;

void AppendVarint(uint64_t value, std::string* out) {
  uint8_t buffer[10];
  uint8_t* end = CodedOutputStream::WriteVarint64ToArray(value, buffer);
  out->append(reinterpret_cast<const char*>(buffer),
              static_cast<size_t>(end - buffer));
}

void SetBytes(std::string_view from, std::string* to) {
  to->assign(from.data(), from.size());
}

}  // namespace

struct LogWriter::Scratch {
  journal::LogRecord message;
  EncodedBytes bytes;
  StoredRow row;
};

LogWriter::LogWriter() : scratch_(std::make_unique<Scratch>()) {}
LogWriter::~LogWriter() = default;

void AppendLogEntry(const LogEntry& e, std::string* body) {
  AppendVarint(e.id, body);
  AppendVarint(e.kind, body);
  AppendVarint(e.body.size(), body);
  body->append(e.body);
}

uint64_t LogWriter::Append(const JournalRecord& r, std::string* body) {
  if (r.kind == JournalRecord::kDelete) {
    AppendLogEntry({.id = r.row.id, .kind = LogEntry::kDelete}, body);
    return 0;
  }
  AppendVarint(r.row.id, body);
  // An insert without a spec is written as the update it is (as the
  // table's statements do).
  const bool insert = r.kind == JournalRecord::kInsert && r.row.spec != nullptr;
  AppendVarint(insert ? LogEntry::kInsert : LogEntry::kUpdate, body);
  Scratch& s = *scratch_;
  EncodeRow(r.row, insert, s.bytes, &s.row);
  const StoredRow& row = s.row;
  journal::LogRecord& m = s.message;
  m.set_state(row.state);
  m.set_executor(row.executor);
  if (insert) {
    SetBytes(row.spec, m.mutable_spec());
    m.set_create_ns(row.create_ns);
    m.set_accepted_seq(row.accepted_seq);
    SetBytes(row.owner, m.mutable_owner());
  } else {
    m.clear_spec();
    m.clear_create_ns();
    m.clear_accepted_seq();
    m.clear_owner();
  }
  m.set_start_ns(row.start_ns);
  m.set_finish_ns(row.finish_ns);
  auto set_optional = [](const std::optional<std::string_view>& value,
                         std::string* (journal::LogRecord::*mut)(),
                         void (journal::LogRecord::*clear)(),
                         journal::LogRecord& m) {
    if (value.has_value()) {
      SetBytes(*value, (m.*mut)());
    } else {
      (m.*clear)();
    }
  };
  set_optional(row.result, &journal::LogRecord::mutable_result,
               &journal::LogRecord::clear_result, m);
  set_optional(row.error, &journal::LogRecord::mutable_error,
               &journal::LogRecord::clear_error, m);
  set_optional(row.history, &journal::LogRecord::mutable_history,
               &journal::LogRecord::clear_history, m);
  m.set_started_seq(row.started_seq);
  m.set_ended_seq(row.ended_seq);
  m.set_attempts(row.attempts);
  m.set_due_ns(row.due_ns);
  m.set_cluster(row.cluster);
  AppendVarint(m.ByteSizeLong(), body);
  m.AppendToString(body);
  return row.spec.size() + row.result.value_or("").size() +
         row.error.value_or("").size() + row.history.value_or("").size();
}

bool NextLogEntry(std::string_view& rest, LogEntry* out, std::string* broken) {
  if (rest.empty()) return false;
  CodedInputStream in(reinterpret_cast<const uint8_t*>(rest.data()),
                      static_cast<int>(std::min<size_t>(
                          rest.size(), std::numeric_limits<int>::max())));
  uint64_t id = 0, kind = 0;
  uint32_t length = 0;
  if (!in.ReadVarint64(&id) || !in.ReadVarint64(&kind) ||
      !in.ReadVarint32(&length)) {
    *broken = "an entry's header is cut short";
    return false;
  }
  if (kind > LogEntry::kDelete) {
    *broken = fmt::format("an entry of job {} has kind {}", id, kind);
    return false;
  }
  const auto header = static_cast<size_t>(in.CurrentPosition());
  if (length > rest.size() - header) {
    *broken = fmt::format("an entry of job {} runs past the row's end", id);
    return false;
  }
  out->id = id;
  out->kind = static_cast<LogEntry::Kind>(kind);
  out->body = rest.substr(header, length);
  rest.remove_prefix(header + length);
  return true;
}

std::string LogReplay::Apply(uint32_t row, std::string_view body) {
  LogEntry e;
  std::string broken;
  std::string_view rest = body;
  while (NextLogEntry(rest, &e, &broken)) {
    ++entries_;
    const LogPos pos{
        .row = row,
        .offset = static_cast<uint32_t>(e.body.data() - body.data()),
        .length = static_cast<uint32_t>(e.body.size())};
    auto [it, added] = jobs_.try_emplace(e.id);
    Job& job = it->second;
    if (added) job.maybe_in_table = e.kind != LogEntry::kInsert;
    switch (e.kind) {
      case LogEntry::kInsert:
        job = Job{.inserted = true,
                  .insert = pos,
                  .maybe_in_table = job.maybe_in_table};
        break;
      case LogEntry::kUpdate:
        if (!job.deleted) {  // A forgotten job's row stays gone.
          job.updated = true;
          job.update = pos;
        }
        break;
      case LogEntry::kDelete:
        ++deletes_;
        job = Job{.deleted = true, .maybe_in_table = job.maybe_in_table};
        break;
    }
  }
  return broken;
}

struct LogRecordParser::Messages {
  journal::LogRecord slot[2];
};
LogRecordParser::LogRecordParser() : messages_(std::make_unique<Messages>()) {}
LogRecordParser::~LogRecordParser() = default;

bool LogRecordParser::Parse(std::string_view body, bool insert, int slot,
                            StoredRow* out) {
  journal::LogRecord& c = messages_->slot[slot];
  c.Clear();
  if (!c.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    return false;
  }
  auto optional = [](bool has, const std::string& value) {
    return has ? std::optional<std::string_view>(value) : std::nullopt;
  };
  if (insert) {
    out->spec = c.spec();
    out->create_ns = c.create_ns();
    out->accepted_seq = c.accepted_seq();
    out->owner = c.owner();
  }
  out->state = c.state();
  out->executor = c.executor();
  out->start_ns = c.start_ns();
  out->finish_ns = c.finish_ns();
  out->result = optional(c.has_result(), c.result());
  out->error = optional(c.has_error(), c.error());
  out->started_seq = c.started_seq();
  out->ended_seq = c.ended_seq();
  out->attempts = c.attempts();
  out->due_ns = c.due_ns();
  out->history = optional(c.has_history(), c.history());
  out->cluster = c.cluster();
  return true;
}

}  // namespace jobd
