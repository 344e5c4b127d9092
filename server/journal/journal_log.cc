#include "server/journal/journal_log.h"

#include <cstring>
#include <optional>
#include <string_view>
#include <type_traits>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
#include "jobd/journal/log.pb.h"
#include "server/journal/journal_store.h"
#include "spdlog/fmt/fmt.h"

namespace jobd {
namespace {

using google::protobuf::io::CodedOutputStream;

void AppendVarint(uint64_t value, std::string* out) {
  uint8_t buffer[10];
  uint8_t* end = CodedOutputStream::WriteVarint64ToArray(value, buffer);
  out->append(reinterpret_cast<const char*>(buffer),
              static_cast<size_t>(end - buffer));
}

// Takes a varint off the front of `in` (at most ten bytes, as protobuf
// reads one); false if `in` ends inside it or it runs past ten bytes.
bool TakeVarint(std::string_view& in, uint64_t* out) {
  uint64_t value = 0;
  for (size_t i = 0; i < in.size() && i < 10; ++i) {
    const auto byte = static_cast<uint8_t>(in[i]);
    value |= uint64_t{byte & 0x7fu} << (7 * i);
    if (byte < 0x80) {
      in.remove_prefix(i + 1);
      *out = value;
      return true;
    }
  }
  return false;
}

}  // namespace

// A LogRecord's fields as protobuf would serialize them (in field order;
// a zero number, or empty bytes without presence, left out), handed to
// `put` as put(field, int64_t) or put(field, bytes): written by hand, as
// the generated class would need every column copied in first (and its
// size computed, then its bytes written: most of a small job's log cost).
// journal_store_test checks the bytes against the generated class's.
template <typename Put>
void ForEachLogField(const StoredRow& row, bool insert, Put&& put) {
  auto number = [&](int field, int64_t value) {
    if (value != 0) put(field, value);
  };
  auto bytes = [&](int field, std::optional<std::string_view> value) {
    if (value.has_value()) put(field, *value);
  };
  auto implicit = [&](int field, std::string_view value) {
    if (!value.empty()) put(field, value);
  };
  number(1, row.state);
  number(2, row.executor);
  if (insert) implicit(3, row.spec);
  if (insert) number(4, row.create_ns);
  number(5, row.start_ns);
  number(6, row.finish_ns);
  bytes(7, row.result);
  bytes(8, row.error);
  if (insert) number(9, row.accepted_seq);
  number(10, row.started_seq);
  number(11, row.ended_seq);
  number(12, row.attempts);
  if (insert) implicit(13, row.owner);
  number(14, row.due_ns);
  bytes(15, row.history);
  number(16, row.cluster);
}

struct LogWriter::Scratch {
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
  // An insert without a spec is written as the update it is (as the
  // table's statements do).
  const bool insert = r.kind == JournalRecord::kInsert && r.row.spec != nullptr;
  const LogEntry::Kind kind = insert ? LogEntry::kInsert : LogEntry::kUpdate;
  Scratch& s = *scratch_;
  EncodeRow(r.row, insert, s.bytes, &s.row);
  const StoredRow& row = s.row;
  // The entry's size, then its bytes written in place: its header, then
  // its body's fields.
  using WireFormatLite = google::protobuf::internal::WireFormatLite;
  size_t length = 0;
  ForEachLogField(row, insert, [&length](int field, auto value) {
    length += WireFormatLite::TagSize(field, WireFormatLite::TYPE_INT64);
    if constexpr (std::is_same_v<decltype(value), int64_t>) {
      length += CodedOutputStream::VarintSize64(static_cast<uint64_t>(value));
    } else {
      length += CodedOutputStream::VarintSize64(value.size()) + value.size();
    }
  });
  const size_t at = body->size();
  body->resize(at + CodedOutputStream::VarintSize64(r.row.id) + 1 +
               CodedOutputStream::VarintSize64(length) + length);
  uint8_t* p = reinterpret_cast<uint8_t*>(body->data()) + at;
  p = CodedOutputStream::WriteVarint64ToArray(r.row.id, p);
  p = CodedOutputStream::WriteVarint32ToArray(kind, p);
  p = CodedOutputStream::WriteVarint64ToArray(length, p);
  ForEachLogField(row, insert, [&p](int field, auto value) {
    if constexpr (std::is_same_v<decltype(value), int64_t>) {
      p = WireFormatLite::WriteInt64ToArray(field, value, p);
    } else {
      p = WireFormatLite::WriteTagToArray(
          field, WireFormatLite::WIRETYPE_LENGTH_DELIMITED, p);
      p = CodedOutputStream::WriteVarint64ToArray(value.size(), p);
      if (!value.empty()) std::memcpy(p, value.data(), value.size());
      p += value.size();
    }
  });
  return row.spec.size() + row.result.value_or("").size() +
         row.error.value_or("").size() + row.history.value_or("").size();
}

bool NextLogEntry(std::string_view& rest, LogEntry* out, std::string* broken) {
  if (rest.empty()) return false;
  std::string_view in = rest;
  uint64_t id = 0, kind = 0, length = 0;
  if (!TakeVarint(in, &id) || !TakeVarint(in, &kind) ||
      !TakeVarint(in, &length)) {
    *broken = "an entry's header is cut short";
    return false;
  }
  if (kind > LogEntry::kDelete) {
    *broken = fmt::format("an entry of job {} has kind {}", id, kind);
    return false;
  }
  if (length > in.size()) {
    *broken = fmt::format("an entry of job {} runs past the row's end", id);
    return false;
  }
  out->id = id;
  out->kind = static_cast<LogEntry::Kind>(kind);
  out->body = in.substr(0, length);
  in.remove_prefix(length);
  rest = in;
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
