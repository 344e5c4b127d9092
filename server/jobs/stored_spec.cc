#include "server/jobs/stored_spec.h"

#include <cstdint>
#include <string>
#include <utility>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"

namespace jobd {

StoredSpec::StoredSpec(v1::JobSpec&& whole, const TaskDef& task)
    : task_(&task) {
  delete whole.release_task();
  body_ = std::make_shared<const v1::JobSpec>(std::move(whole));
  CacheSize();
}

v1::JobSpec StoredSpec::Whole() const {
  v1::JobSpec whole = *body_;
  if (whole.task().empty()) whole.set_task(task_name());
  return whole;
}

void StoredSpec::AppendWholeTo(std::string* out) const {
  // With the sizes cached when it was made (AppendToString would compute
  // them all again).
  const size_t at = out->size();
  out->resize(at + static_cast<size_t>(body_->GetCachedSize()));
  body_->SerializeWithCachedSizesToArray(
      reinterpret_cast<uint8_t*>(out->data() + at));
  if (body_->task().empty() && task_ != nullptr) {
    // The name as a JobSpec of that field alone would serialize it: written
    // directly (building that JobSpec cost more than the rest of this).
    using google::protobuf::internal::WireFormatLite;
    const std::string& name = task_->name;
    uint8_t header[1 + 5];
    header[0] = static_cast<uint8_t>(
        WireFormatLite::MakeTag(v1::JobSpec::kTaskFieldNumber,
                                WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
    uint8_t* end =
        google::protobuf::io::CodedOutputStream::WriteVarint32ToArray(
            static_cast<uint32_t>(name.size()), header + 1);
    out->append(reinterpret_cast<const char*>(header),
                static_cast<size_t>(end - header));
    out->append(name);
  }
}

}  // namespace jobd
