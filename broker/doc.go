// Package broker runs LinkEdge's MQTT broker, built on mochi-mqtt v2.
//
// The same code serves two roles: the fleet broker in the cloud
// (`linkedge broker`) and the local bus embedded in every truck agent. Because
// a single process may host several brokers (a demo runs a fleet broker and
// three trucks' local buses side by side), the package keeps no global state:
// each Broker owns its mochi server, its storage, its HTTP endpoint and its own
// prometheus.Registry.
//
// Trucks are offline for weeks at a time, so the broker is tuned for long
// absences: messages and persistent sessions live for MaxMessageExpiry (90
// days by default, where mochi would drop them after a day), and with a
// DataDir the retained messages, persistent sessions, their subscriptions and
// their queued QoS 1/2 messages survive a broker restart.
//
// Typical embedded use:
//
//	b, err := broker.New(broker.Config{Listen: "127.0.0.1:0"})
//	if err != nil { ... }
//	if err := b.Start(ctx); err != nil { ... }
//	defer b.Close()
//	_ = b.Server().Publish("linkedge/v1/trucks/t1/state", payload, false, 1)
package broker
