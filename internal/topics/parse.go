package topics

import "strings"

// Parsers for incoming topics. They accept exactly the topics the builders
// produce for valid ids, and nothing else: no wildcards, no empty or extra
// levels, no invalid ids. ok is false for anything else; callers should
// drop (and may log) such messages.

// ParseModelRelease returns the model of a [ModelRelease] topic.
func ParseModelRelease(topic string) (model string, ok bool) {
	return oneID(topic, "models", "release")
}

// ParseTruckStatus returns the truck of a [TruckStatus] topic.
func ParseTruckStatus(topic string) (truck string, ok bool) {
	return oneID(topic, "trucks", "status")
}

// ParseTruckPresence returns the truck of a [TruckPresence] topic.
func ParseTruckPresence(topic string) (truck string, ok bool) {
	return oneID(topic, "trucks", "presence")
}

// ParseTruckEvents returns the truck of a [TruckEvents] topic.
func ParseTruckEvents(topic string) (truck string, ok bool) {
	return oneID(topic, "trucks", "events")
}

// ParseTruckGrantRequest returns the truck of a [TruckGrantRequest] topic.
func ParseTruckGrantRequest(topic string) (truck string, ok bool) {
	return oneID(topic, "trucks", "grant-request")
}

// ParseTruckPredictions returns the truck and model of a [TruckPredictions]
// topic.
func ParseTruckPredictions(topic string) (truck, model string, ok bool) {
	rest, ok := strings.CutPrefix(topic, Prefix+"/trucks/")
	if !ok {
		return "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[1] != "predictions" ||
		ValidID(parts[0]) != nil || ValidID(parts[2]) != nil {
		return "", "", false
	}
	return parts[0], parts[2], true
}

// oneID matches topic against Prefix/kind/{id}/leaf and returns the id.
func oneID(topic, kind, leaf string) (string, bool) {
	rest, ok := strings.CutPrefix(topic, Prefix+"/"+kind+"/")
	if !ok {
		return "", false
	}
	id, ok := strings.CutSuffix(rest, "/"+leaf)
	if !ok || ValidID(id) != nil { // ValidID refuses "/", so id is one level
		return "", false
	}
	return id, true
}
