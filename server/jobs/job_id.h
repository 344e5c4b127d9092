// Job ids as clients see them. A node numbers its jobs (a uint64, never
// given twice: server/journal reserves them ahead). Without cluster mode
// an id is that number in decimal ("42"). In cluster mode numbers of two
// nodes collide, so an id also names its node: "42@node-a" (a node name
// is 1 to 64 of [A-Za-z0-9._-], CheckNodeName, so '@' cannot be part of
// it). A node accepts its own jobs by either form.
//
// SetJobIdNode is called once, by the daemon in cluster mode, before the
// service starts and before anything formats an id; in-process daemons of
// one test process share it (cluster tests run nodes as processes).
//
// Thread-safety: FormatJobId and the parsers from any thread (the node is
// an atomic pointer, set once). Ownership: the node name is kept for the
// process's life.
#ifndef JOBD_SERVER_JOBS_JOB_ID_H_
#define JOBD_SERVER_JOBS_JOB_ID_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace jobd {

// A node name: 1 to 64 of [A-Za-z0-9._-]. InvalidArgument naming `field`
// otherwise.
absl::Status CheckNodeName(std::string_view name, std::string_view field);

// Names this node in the ids it gives (cluster mode). Once.
void SetJobIdNode(std::string node);
// This node's name in ids; empty without cluster mode.
std::string_view JobIdNode();

// "42", or "42@node" in cluster mode.
std::string FormatJobId(uint64_t number);

// Another node's name as a small number, for an event that names that
// node's job (Event::node: a cluster-wide duplicate's first job): 1 and
// up; 0 for this node's own name (and past 65,535 distinct names). Names
// are kept for the process's life: a cluster's nodes are few.
uint16_t InternJobIdNode(std::string_view node);
// FormatJobId(number) for node 0, else "42@<the interned node>".
std::string FormatJobId(uint64_t number, uint16_t node);

// A job id as a client sent it.
struct JobRef {
  uint64_t number = 0;
  // The node named in the id when it is not this one; empty for this
  // node's jobs (a bare number, or this node's qualified form).
  std::string node;
  bool here() const { return node.empty(); }
};

// "N" or "N@node" (N a positive decimal number, node a valid node name).
// InvalidArgument naming `field` otherwise.
absl::StatusOr<JobRef> ParseJobRef(std::string_view id, std::string_view field);

// For ids that must name a job of this node (a bare number or this
// node's qualified form): its number, or 0 if `id` is not one.
uint64_t OwnJobNumber(std::string_view id);

}  // namespace jobd

#endif  // JOBD_SERVER_JOBS_JOB_ID_H_
