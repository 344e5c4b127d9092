// libFuzzer target: the replay of a row of the journal's log
// (server/journal/journal_log.h: NextLogEntry, LogReplay, LogRecordParser,
// then DecodeRow) on any stored bytes, as a damaged disk or an older jobd
// could leave them. It must never crash or read past the row; every entry
// it takes lies within the row; a job's row it reads back is valid UTF-8
// and, without a problem, holds an end exactly when its state is terminal.
//
// Input: the row's bytes.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "google/protobuf/stubs/logging.h"
#include "server/journal/journal.h"
#include "server/journal/journal_log.h"
#include "workers/sdk/utf8.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Records that do not parse are the point: not a log line each.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string body(reinterpret_cast<const char*>(data), size);
  // The framing alone: each entry within what is left of the row.
  std::string_view rest = body;
  jobd::LogEntry e;
  std::string broken;
  while (jobd::NextLogEntry(rest, &e, &broken)) {
    Check(e.body.data() >= body.data() &&
          e.body.data() + e.body.size() <= body.data() + body.size());
  }
  jobd::LogReplay replay;
  replay.Apply(0, body);
  jobd::LogRecordParser parser;
  std::optional<uint64_t> previous_id;
  for (const auto& [id, job] : replay.jobs()) {
    Check(!previous_id || id > *previous_id);  // In ascending order.
    previous_id = id;
    Check(!(job.deleted && (job.inserted || job.updated)));
    jobd::StoredRow row;
    row.id = static_cast<int64_t>(id);
    for (const auto& [has, pos, insert] :
         {std::tuple(job.inserted, job.insert, true),
          std::tuple(job.updated, job.update, false)}) {
      if (!has) continue;
      Check(static_cast<size_t>(pos.offset) + pos.length <= body.size());
      parser.Parse(pos.In(body), insert, insert ? 0 : 1, &row);
    }
    const jobd::JournalRow decoded = jobd::DecodeRow(row);
    Check(jobd::IsValidUtf8(decoded.owner) &&
          jobd::IsValidUtf8(decoded.problem));
    Check(decoded.spec != nullptr);
    if (decoded.problem.empty()) {
      Check((decoded.end != nullptr) == jobd::IsTerminal(decoded.state));
    } else {
      Check(decoded.end == nullptr);
    }
  }
  return 0;
}
