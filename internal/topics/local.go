package topics

// Truck-local broker topics. This broker runs on the truck and is reached
// over loopback or the vehicle network, so the link is not the weak point;
// QoS 0 avoids acknowledgement round-trips at sensor rates.

// LocalReadings is where on-board producers publish sensor rows for model to
// score: not retained (a stale row must not be re-scored after a restart);
// QoS 0 because the next row arrives shortly and a lost row costs one
// prediction.
//
//	linkedge/v1/local/{model}/readings
func LocalReadings(model string) string { return Prefix + "/local/" + model + "/readings" }

// QoS and retain flag for [LocalReadings].
const (
	LocalReadingsQoS    byte = 0
	LocalReadingsRetain      = false
)

// LocalPredictions is where the agent publishes model's predictions for
// on-board consumers: not retained, QoS 0, for the same reasons as
// [LocalReadings].
//
//	linkedge/v1/local/{model}/predictions
func LocalPredictions(model string) string { return Prefix + "/local/" + model + "/predictions" }

// QoS and retain flag for [LocalPredictions].
const (
	LocalPredictionsQoS    byte = 0
	LocalPredictionsRetain      = false
)

// LocalErrors is where the agent answers a reading it could not score (bad
// JSON, a wrong feature count), with the reading's id and what was wrong,
// so that the producer learns of it: not retained, QoS 0.
//
//	linkedge/v1/local/{model}/errors
func LocalErrors(model string) string { return Prefix + "/local/" + model + "/errors" }

// QoS and retain flag for [LocalErrors].
const (
	LocalErrorsQoS    byte = 0
	LocalErrorsRetain      = false
)

// LocalHold is where a truck application holds the switch to a new model
// version (see edgeclient/hold), each under its own name: retained, so a
// hold survives the agent's restart, and QoS 1, so it is not lost on the
// way; an empty retained message releases it.
//
//	linkedge/v1/local/hold/{app}
func LocalHold(app string) string { return Prefix + "/local/hold/" + app }

// LocalHoldFilter matches every application's hold topic.
const LocalHoldFilter = Prefix + "/local/hold/+"

// QoS and retain flag for [LocalHold].
const (
	LocalHoldQoS    byte = 1
	LocalHoldRetain      = true
)
