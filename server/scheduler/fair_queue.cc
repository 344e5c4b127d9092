#include "server/scheduler/fair_queue.h"

#include <algorithm>
#include <vector>

namespace jobd {

FairQueue::Flow& FairQueue::FlowOf(Caller caller, uint32_t weight) {
  if (last_ != nullptr && last_->caller == caller) return *last_;
  auto [it, added] = flows_.try_emplace(caller);
  Flow& flow = it->second;
  if (added) {
    flow.caller = caller;
    flow.stride = kScale / std::clamp<uint32_t>(weight, 1, CallerWeights::kMax);
  }
  last_ = &flow;
  return flow;
}

void FairQueue::Push(Caller caller, uint32_t weight, uint64_t id) {
  Flow& flow = FlowOf(caller, weight);
  flow.ids.push_back(id);
  ++entries_;
  if (!flow.active) Activate(flow, 0);
}

void FairQueue::PushFront(Caller caller, uint32_t weight, uint64_t id) {
  Flow& flow = FlowOf(caller, weight);
  flow.ids.push_front(id);
  ++entries_;
  if (!flow.active) {
    Activate(flow, flow.stride);
  } else if (solo_ == &flow) {
    flow.pass = std::max(vtime_, flow.pass - std::min(flow.pass, flow.stride));
  } else {
    order_.erase({flow.pass, flow.seq});
    flow.pass = std::max(vtime_, flow.pass - std::min(flow.pass, flow.stride));
    order_.emplace(Key{flow.pass, flow.seq}, &flow);
  }
}

void FairQueue::Activate(Flow& flow, uint64_t refund) {
  if (flow.seq != 0) idle_.erase({flow.pass, flow.seq});  // Was ahead.
  flow.pass = std::max(vtime_, flow.pass - std::min(flow.pass, refund));
  flow.seq = ++next_seq_;
  flow.active = true;
  ++active_;
  if (active_ == 1) {
    solo_ = &flow;
    return;
  }
  if (solo_ != nullptr) {
    order_.emplace(Key{solo_->pass, solo_->seq}, solo_);
    solo_ = nullptr;
  }
  order_.emplace(Key{flow.pass, flow.seq}, &flow);
}

void FairQueue::Deactivate(Flow& flow) {
  if (solo_ == &flow) {
    solo_ = nullptr;
  } else {
    order_.erase({flow.pass, flow.seq});
    if (order_.size() == 1) {  // One left: no ordering to keep.
      solo_ = order_.begin()->second;
      order_.clear();
    }
  }
  flow.active = false;
  --active_;
  if (active_ == 0) {  // Nobody queued: nobody is owed anything.
    flows_.clear();
    idle_.clear();
    last_ = nullptr;
    return;
  }
  if (flow.pass > vtime_) {
    idle_.emplace(Key{flow.pass, flow.seq}, &flow);
  } else {
    Forget(flow);
  }
}

void FairQueue::Charge(Flow& flow, size_t n) {
  const bool ordered = solo_ != &flow;
  if (ordered) order_.erase({flow.pass, flow.seq});
  vtime_ = std::max(vtime_, flow.pass);
  flow.pass += n * flow.stride;
  if (flow.ids.empty()) {
    if (ordered) order_.emplace(Key{flow.pass, flow.seq}, &flow);
    Deactivate(flow);
  } else if (ordered) {
    order_.emplace(Key{flow.pass, flow.seq}, &flow);
  }
  Reap();
}

void FairQueue::Reap() {
  while (!idle_.empty() && idle_.begin()->first.first <= vtime_) {
    Flow* flow = idle_.begin()->second;
    idle_.erase(idle_.begin());
    Forget(*flow);
  }
}

void FairQueue::Forget(Flow& flow) {
  if (last_ == &flow) last_ = nullptr;
  flows_.erase(flow.caller);
}

size_t FairQueue::Take(absl::FunctionRef<Verdict(uint64_t)> visit) {
  while (active_ > 0) {
    Flow& flow = solo_ != nullptr ? *solo_ : *order_.begin()->second;
    size_t taken = 0;
    bool stopped = false;
    while (!flow.ids.empty()) {
      const Verdict verdict = visit(flow.ids.front());
      if (verdict == Verdict::kStop) {
        stopped = true;
        break;
      }
      flow.ids.pop_front();
      --entries_;
      if (verdict == Verdict::kSkip) continue;
      ++taken;
      if (verdict == Verdict::kTakeLast) {
        stopped = true;
        break;
      }
    }
    if (taken > 0) {
      Charge(flow, taken);
    } else if (flow.ids.empty()) {
      Deactivate(flow);  // Only stale entries: nothing to charge.
    }
    if (taken > 0 || stopped) return taken;
  }
  return 0;
}

void FairQueue::RemoveIf(absl::FunctionRef<bool(uint64_t)> drop) {
  std::vector<Flow*> emptied;
  for (auto& [caller, flow] : flows_) {
    const size_t before = flow.ids.size();
    flow.ids.erase(std::remove_if(flow.ids.begin(), flow.ids.end(),
                                  [&](uint64_t id) { return drop(id); }),
                   flow.ids.end());
    entries_ -= before - flow.ids.size();
    if (flow.active && flow.ids.empty()) emptied.push_back(&flow);
  }
  for (Flow* flow : emptied) Deactivate(*flow);
}

void FairQueue::Reweigh(const CallerWeights& weights) {
  for (auto& [caller, flow] : flows_) {
    flow.stride = kScale / std::clamp<uint32_t>(weights.Of(*caller), 1,
                                                CallerWeights::kMax);
  }
}

uint64_t FairQueue::pass(Caller caller) const {
  auto it = flows_.find(caller);
  return it == flows_.end() ? 0 : it->second.pass;
}

}  // namespace jobd
