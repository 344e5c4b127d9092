#include "server/scheduler/job_output.h"

#include <algorithm>
#include <utility>

namespace jobd {

v1::StreamJobOutputResponse OutputRead::TakeResponse() {
  v1::StreamJobOutputResponse out;
  for (OutputPiece& p : pieces) {
    v1::OutputChunk& c = *out.add_chunks();
    c.set_offset(p.offset);
    c.set_stream(p.stream);
    c.set_data(std::move(p.data));
  }
  pieces.clear();
  out.set_dropped_bytes(dropped);
  out.set_next_offset(next_offset);
  out.set_ended(ended);
  return out;
}

bool NothingNew(const v1::StreamJobOutputResponse& r) {
  return r.chunks().empty() && r.dropped_bytes() == 0 && !r.ended();
}

namespace {

// Appends to the last piece while it is of the same stream and under this.
constexpr size_t kMergeBytes = 16 << 10;

}  // namespace

void JobOutputs::PieceQueue::pop_front() {
  pieces_[head_++] = OutputPiece{};  // Its bytes go now.
  if (head_ == pieces_.size()) {
    // Emptied (trimmed to nothing for another job's room, perhaps): its
    // slots go too, as a deque's blocks would.
    pieces_ = {};
    head_ = 0;
  } else if (head_ >= 16 && head_ * 2 >= pieces_.size()) {
    pieces_.erase(pieces_.begin(),
                  pieces_.begin() + static_cast<std::ptrdiff_t>(head_));
    head_ = 0;
    if (pieces_.capacity() > 4 * pieces_.size()) pieces_.shrink_to_fit();
  }
}

std::vector<JobOutputs::Callback> JobOutputs::TakeWaiters(Output& o) {
  std::vector<Callback> fns;
  fns.reserve(o.waiters.size());
  for (auto& [key, fn] : o.waiters) fns.push_back(std::move(fn));
  o.waiters.clear();
  return fns;
}

void JobOutputs::SetLimits(OutputLimits limits) {
  absl::MutexLock lock(&mu_);
  limits_ = limits;
}

void JobOutputs::Open(uint64_t id) {
  absl::MutexLock lock(&mu_);
  Output& o = outputs_[id];
  o.open = true;
  o.ended = false;
}

void JobOutputs::SetHeldLocked(Output& o, size_t held) {
  if (held > 0 && o.bytes == 0) ++holding_;
  if (held == 0 && o.bytes > 0) --holding_;
  bytes_ = bytes_ - o.bytes + held;
  o.bytes = held;
}

void JobOutputs::TrimLocked(Output& o, size_t keep) {
  while (o.bytes > keep && !o.pieces.empty()) {
    OutputPiece& p = o.pieces.front();
    const size_t excess = o.bytes - keep;
    if (excess >= p.data.size()) {  // The whole piece (frees its overhead).
      const size_t cost = p.data.size() + kPieceOverhead;
      dropped_ += p.data.size();
      SetHeldLocked(o, o.bytes - cost);
      o.pieces.pop_front();
    } else {
      p.data.erase(0, excess);
      p.offset += excess;
      dropped_ += excess;
      SetHeldLocked(o, o.bytes - excess);
    }
  }
  o.start = o.pieces.empty() ? o.end : o.pieces.front().offset;
}

void JobOutputs::MakeRoomLocked(Output& writer, size_t need) {
  while (bytes_ + need > limits_.total_bytes && !ended_.empty()) {
    const uint64_t id = ended_.front();
    ended_.pop_front();
    auto it = outputs_.find(id);
    if (it == outputs_.end() || !it->second.ended) continue;
    TrimLocked(it->second, 0);
  }
  if (bytes_ + need > limits_.total_bytes) {
    const size_t over = bytes_ + need - limits_.total_bytes;
    TrimLocked(writer, writer.bytes > over ? writer.bytes - over : 0);
  }
}

bool JobOutputs::Append(uint64_t id, v1::OutputStream stream,
                        std::string_view bytes) {
  std::vector<Callback> wake;
  {
    absl::MutexLock lock(&mu_);
    auto it = outputs_.find(id);
    if (it == outputs_.end()) return false;
    if (!it->second.open || bytes.empty()) return true;
    Output& o = it->second;
    const size_t room = std::min(limits_.per_job_bytes, limits_.total_bytes);
    if (room <= kPieceOverhead) {  // Nothing is kept.
      dropped_ += bytes.size();
      o.end += bytes.size();
      TrimLocked(o, 0);
    } else {
      // Only the tail of what cannot be kept whole.
      if (bytes.size() > room - kPieceOverhead) {
        const size_t cut = bytes.size() - (room - kPieceOverhead);
        dropped_ += cut;
        o.end += cut;
        bytes.remove_prefix(cut);
        TrimLocked(o, 0);
      }
      // Room for a new piece (a merge costs less).
      const size_t cost = bytes.size() + kPieceOverhead;
      if (o.bytes + cost > limits_.per_job_bytes) {
        TrimLocked(o, limits_.per_job_bytes - cost);
      }
      MakeRoomLocked(o, cost);
      if (!o.pieces.empty() && o.pieces.back().stream == stream &&
          o.pieces.back().offset + o.pieces.back().data.size() == o.end &&
          o.pieces.back().data.size() < kMergeBytes) {
        o.pieces.back().data.append(bytes);
        SetHeldLocked(o, o.bytes + bytes.size());
      } else {
        o.pieces.push_back(
            {.offset = o.end, .stream = stream, .data = std::string(bytes)});
        SetHeldLocked(o, o.bytes + bytes.size() + kPieceOverhead);
      }
      o.end += bytes.size();
      o.start = o.pieces.front().offset;
    }
    wake = TakeWaiters(o);
  }
  for (Callback& fn : wake) fn();
  return true;
}

std::vector<JobOutputs::Callback> JobOutputs::End(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = outputs_.find(id);
  if (it == outputs_.end()) return {};
  Output& o = it->second;
  if (!o.ended) {
    o.ended = true;
    o.open = false;
    if (o.bytes > 0) ended_.push_back(id);
    // Forgotten jobs' places go now and then (kept amortized O(1)).
    if (ended_.size() > 2 * outputs_.size() + 64) {
      std::erase_if(ended_, [this](uint64_t e) {
        mu_.AssertHeld();
        return !outputs_.contains(e);
      });
    }
  }
  std::vector<Callback> wake = TakeWaiters(o);
  // A job that wrote nothing keeps nothing here (Read answers the same).
  if (o.end == 0) outputs_.erase(it);
  return wake;
}

void JobOutputs::Forget(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = outputs_.find(id);
  if (it == outputs_.end()) return;
  // (No waiters: End released them.) Its place in ended_ is skipped.
  SetHeldLocked(it->second, 0);
  outputs_.erase(it);
}

OutputRead JobOutputs::Read(uint64_t id, uint64_t offset, size_t max_bytes,
                            bool job_ended) const {
  OutputRead r;
  absl::MutexLock lock(&mu_);
  auto it = outputs_.find(id);
  if (it == outputs_.end()) {
    r.next_offset = offset;
    r.ended = job_ended;
    return r;
  }
  const Output& o = it->second;
  uint64_t at = std::min(offset, o.end);
  if (at < o.start) {
    r.dropped = o.start - at;
    at = o.start;
  }
  // The first piece holding `at`.
  auto p = std::upper_bound(o.pieces.begin(), o.pieces.end(), at,
                            [](uint64_t off, const OutputPiece& piece) {
                              return off < piece.offset;
                            });
  if (p != o.pieces.begin()) --p;
  size_t taken = 0;
  for (; p != o.pieces.end() && taken < max_bytes; ++p) {
    if (p->offset + p->data.size() <= at) continue;
    const size_t skip = at - p->offset;
    const size_t n = std::min(p->data.size() - skip, max_bytes - taken);
    r.pieces.push_back(
        {.offset = at, .stream = p->stream, .data = p->data.substr(skip, n)});
    at += n;
    taken += n;
  }
  r.next_offset = at;
  r.ended = (o.ended || job_ended) && at >= o.end;
  return r;
}

bool JobOutputs::AddWaiter(uint64_t id, uint64_t offset, const void* key,
                           Callback fn) {
  absl::MutexLock lock(&mu_);
  Output& o = outputs_[id];
  if (o.ended || o.end > offset) return false;
  o.waiters.emplace_back(key, std::move(fn));
  return true;
}

void JobOutputs::RemoveWaiter(uint64_t id, const void* key) {
  absl::MutexLock lock(&mu_);
  auto it = outputs_.find(id);
  if (it == outputs_.end()) return;
  std::erase_if(it->second.waiters,
                [key](const auto& w) { return w.first == key; });
}

JobOutputs::Stats JobOutputs::stats() const {
  absl::MutexLock lock(&mu_);
  return {.bytes = bytes_, .jobs = holding_, .dropped = dropped_};
}

}  // namespace jobd
