package topics

// Fleet broker topics. See the package doc for the id contract.

// ModelRelease is where the publisher announces the signed release document
// (package release) for model: retained, so a truck that reconnects after
// days offline gets the current document at once; QoS 1 because a lost
// announcement would leave trucks on an old model until the next re-sign.
//
//	linkedge/v1/models/{model}/release
func ModelRelease(model string) string { return Prefix + "/models/" + model + "/release" }

// AllModelReleases is the subscription filter matching [ModelRelease] for
// every model.
//
//	linkedge/v1/models/+/release
func AllModelReleases() string { return ModelRelease(Wildcard) }

// QoS and retain flag for [ModelRelease].
const (
	ReleaseQoS    byte = 1
	ReleaseRetain      = true
)

// TruckDesired carries an operator's per-truck pin (for example "stay on
// version 3 of this model"): retained, so the pin outlives the operator's
// session and reaches a truck that was offline when it was set; QoS 1.
// Publishing an empty retained message clears the pin.
//
//	linkedge/v1/trucks/{truck}/desired
func TruckDesired(truck string) string { return truckTopic(truck, "desired") }

// QoS and retain flag for [TruckDesired].
const (
	DesiredQoS    byte = 1
	DesiredRetain      = true
)

// TruckStatus is the truck's current state (models, versions, phase):
// retained so dashboards see every truck's last known state on subscribe;
// QoS 1. Whether the truck is connected is [TruckPresence]'s, so that the
// last will never overwrites this document and a reconnect need not send
// it again. (Agents before the presence topic registered their last will
// here, a status with online=false; readers still treat that as offline.)
//
//	linkedge/v1/trucks/{truck}/status
func TruckStatus(truck string) string { return truckTopic(truck, "status") }

// AllTruckStatus is the subscription filter matching [TruckStatus] for every
// truck.
//
//	linkedge/v1/trucks/+/status
func AllTruckStatus() string { return TruckStatus(Wildcard) }

// QoS and retain flag for [TruckStatus].
const (
	StatusQoS    byte = 1
	StatusRetain      = true
)

// TruckPresence says whether the truck is connected: a few bytes, retained,
// QoS 1 (see package status for the payloads). The agent publishes "online"
// on every connect and registers "offline" as its last will here, which
// the broker publishes when the connection drops without a clean
// disconnect; a clean shutdown publishes "offline" itself. Kept apart from
// [TruckStatus] so a reconnect costs this tiny message, not the full status.
//
//	linkedge/v1/trucks/{truck}/presence
func TruckPresence(truck string) string { return truckTopic(truck, "presence") }

// AllTruckPresence is the subscription filter matching [TruckPresence] for
// every truck.
//
//	linkedge/v1/trucks/+/presence
func AllTruckPresence() string { return TruckPresence(Wildcard) }

// QoS and retain flag for [TruckPresence] and the last will.
const (
	PresenceQoS    byte = 1
	PresenceRetain      = true
)

// TruckEvents is a stream of notable happenings on a truck (download
// started, verification failed, model switched, rolled back): not retained,
// because an event is not state; QoS 1 so events queued while offline are
// delivered once the link returns.
//
//	linkedge/v1/trucks/{truck}/events
func TruckEvents(truck string) string { return truckTopic(truck, "events") }

// QoS and retain flag for [TruckEvents].
const (
	EventsQoS    byte = 1
	EventsRetain      = false
)

// TruckPredictions carries predictions the truck forwards to the cloud for
// model: not retained (a stream, not state); QoS 1 so predictions made while
// offline are not lost when the agent's queue drains.
//
//	linkedge/v1/trucks/{truck}/predictions/{model}
func TruckPredictions(truck, model string) string {
	return truckTopic(truck, "predictions") + "/" + model
}

// QoS and retain flag for [TruckPredictions].
const (
	PredictionsQoS    byte = 1
	PredictionsRetain      = false
)

// TruckGrantRequest is where a truck asks the publisher for a download
// grant (release.GrantRequest) for an artifact whose release says "grant":
// not retained (a question, not state), QoS 1 so that a request made just
// before a drop still arrives.
//
//	linkedge/v1/trucks/{truck}/grant-request
func TruckGrantRequest(truck string) string { return truckTopic(truck, "grant-request") }

// AllTruckGrantRequests is the publisher's subscription to every truck's
// [TruckGrantRequest].
//
//	linkedge/v1/trucks/+/grant-request
func AllTruckGrantRequests() string { return TruckGrantRequest(Wildcard) }

// TruckGrant is where the publisher answers a truck's grant request with a
// signed release.Grant bound to that truck: not retained (a grant is a
// short-lived capability, not state), QoS 1.
//
//	linkedge/v1/trucks/{truck}/grant
func TruckGrant(truck string) string { return truckTopic(truck, "grant") }

// QoS and retain flag for [TruckGrantRequest] and [TruckGrant].
const (
	GrantQoS    byte = 1
	GrantRetain      = false
)

func truckTopic(truck, leaf string) string { return Prefix + "/trucks/" + truck + "/" + leaf }
