package groups

import "errors"

// The coordinator's errors are those of Kafka's classic group protocol,
// so a front end maps each to one protocol error code.
var (
	// ErrInvalidGroupID: the group id is empty where a group is managed.
	ErrInvalidGroupID = errors.New("invalid group id")
	// ErrInvalidSessionTimeout: outside the coordinator's session bounds.
	ErrInvalidSessionTimeout = errors.New("session timeout outside the allowed range")
	// ErrInconsistentProtocol: no protocol type, no protocols, or none
	// shared with the group's members.
	ErrInconsistentProtocol = errors.New("inconsistent group protocol")
	// ErrUnknownMember: the member id is not (or no longer) in the group.
	ErrUnknownMember = errors.New("unknown member id")
	// ErrMemberIDRequired: a new member must join again with the id it was
	// given, so a join whose answer is lost does not leave a member behind.
	ErrMemberIDRequired = errors.New("member id required")
	// ErrIllegalGeneration: the member's generation is not the group's.
	ErrIllegalGeneration = errors.New("illegal generation")
	// ErrRebalanceInProgress: the member must join again.
	ErrRebalanceInProgress = errors.New("rebalance in progress")
	// ErrFencedInstance: another member has taken the static instance id.
	ErrFencedInstance = errors.New("fenced instance id")
	// ErrGroupNotFound: no such group.
	ErrGroupNotFound = errors.New("group not found")
	// ErrNonEmptyGroup: the group still has members.
	ErrNonEmptyGroup = errors.New("group has members")
	// ErrSubscribed: an offset cannot be deleted while members consume it.
	ErrSubscribed = errors.New("group is subscribed to the topic")
	// ErrMetadataTooLarge: a commit's metadata is over MaxMetadataBytes.
	ErrMetadataTooLarge = errors.New("offset metadata too large")
	// ErrUnavailable: the coordinator is closed, or its offset log failed
	// (retriable: a restart replays the log).
	ErrUnavailable = errors.New("group coordinator unavailable")
	// ErrNotCoordinator: in a cluster, another node coordinates the groups
	// (the controller); clients look it up again (FindCoordinator).
	ErrNotCoordinator = errors.New("not the group coordinator")
)
