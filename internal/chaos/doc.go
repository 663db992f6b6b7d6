// Package chaos is LinkEdge's chaos suite: real processes, real faults,
// seeded and reproducible. Its test (TestChaos) runs the fleet broker, the
// publisher and a truck agent as child processes of the linkedge binary,
// puts fault proxies on the truck's MQTT link (internal/netsim) and on its
// artifact link ([HTTPFaultProxy]), rolls out a new model version while it
// SIGKILLs processes, cuts links and corrupts downloads and stored bundles
// as the seed says, then checks that the truck ends up where it must. See
// docs/reliability.md.
//
// The package's non-test code is the HTTP fault proxy and a child-process
// helper; both are usable by other end-to-end tests.
package chaos
