package broker

import "testing"

func TestWithin(t *testing.T) {
	tests := []struct {
		filter, pattern string
		want            bool
	}{
		{"linkedge/v1/models/m1", "linkedge/v1/models/#", true},
		{"linkedge/v1/models", "linkedge/v1/models/#", true}, // "a/#" matches "a"
		{"linkedge/v1/models/#", "linkedge/v1/models/#", true},
		{"linkedge/v1/models/+/meta", "linkedge/v1/models/#", true},
		{"linkedge/v1/#", "linkedge/v1/models/#", false},
		{"linkedge/v1/+/m1", "linkedge/v1/models/#", false},
		{"#", "linkedge/v1/#", false},
		{"linkedge/v1/trucks/t1/desired", "linkedge/v1/trucks/+/desired", true},
		{"linkedge/v1/trucks/+/desired", "linkedge/v1/trucks/+/desired", true},
		{"linkedge/v1/trucks/t1/desired/x", "linkedge/v1/trucks/+/desired", false},
		{"linkedge/v1/trucks/t1", "linkedge/v1/trucks/+/desired", false},
		{"linkedge/v1/trucks/t1/#", "linkedge/v1/trucks/+/desired", false},
		{"linkedge/v1/trucks/t1/state", "linkedge/v1/trucks/t1/#", true},
		{"linkedge/v1/trucks/t10/state", "linkedge/v1/trucks/t1/#", false},
		{"linkedge/v1/trucks/+/state", "linkedge/v1/trucks/t1/#", false},
		{"$share/g/linkedge/v1/models/#", "linkedge/v1/models/#", true},
		{"$share/g", "linkedge/v1/models/#", false},
		{"$share/g/#", "linkedge/v1/models/#", false},
		{"$SYS/broker/uptime", "linkedge/v1/#", false},
		{"", "linkedge/v1/#", false},
	}
	for _, tc := range tests {
		if got := within(tc.filter, tc.pattern); got != tc.want {
			t.Errorf("within(%q, %q) = %v, want %v", tc.filter, tc.pattern, got, tc.want)
		}
	}
}

func TestACLAllows(t *testing.T) {
	pub := User{Username: "fleet", Role: RolePublisher}
	truck := User{Username: "t1", Role: RoleTruck}
	ops := User{Username: "ops", Role: RoleOperator}
	tests := []struct {
		user  User
		topic string
		write bool
		want  bool
	}{
		{pub, "linkedge/v1/models/detector", true, true},
		{pub, "linkedge/v1/trucks/t9/desired", true, true},
		{pub, "linkedge/v1/trucks/t9/state", true, false},
		{pub, "other/topic", true, false},
		{pub, "#", false, true},
		{pub, "$SYS/#", false, true},
		{truck, "linkedge/v1/trucks/t1/status", true, true},
		{truck, "linkedge/v1/trucks/t1/events", true, true},
		{truck, "linkedge/v1/trucks/t1/presence", true, true},
		{truck, "linkedge/v1/trucks/t2/presence", true, false},
		{truck, "linkedge/v1/trucks/t1/presence/x", true, false},
		{truck, "linkedge/v1/trucks/t1/presence", false, false},
		{pub, "linkedge/v1/trucks/t9/presence", true, false},
		{pub, "linkedge/v1/trucks/+/presence", false, true},
		{truck, "linkedge/v1/trucks/t1/predictions/aps-failure", true, true},
		{truck, "linkedge/v1/trucks/t1/predictions/a/b", true, false},
		{truck, "linkedge/v1/trucks/t1/state", true, false},
		{truck, "$share/g/linkedge/v1/trucks/t1/status", true, false},
		{truck, "$share/g/linkedge/v1/models/#", false, true},
		{truck, "linkedge/v1/trucks/t1/desired", true, false},
		{truck, "linkedge/v1/trucks/t1/grant", true, false},
		{truck, "linkedge/v1/trucks/t2/status", true, false},
		{truck, "linkedge/v1/models/detector", true, false},
		{truck, "linkedge/v1/models/#", false, true},
		{truck, "linkedge/v1/trucks/t1/desired", false, true},
		{truck, "linkedge/v1/trucks/t1/state", false, false},
		{truck, "linkedge/v1/trucks/t2/desired", false, false},
		{pub, "linkedge/v1/trucks/t9/grant", true, true},
		{pub, "linkedge/v1/trucks/+/grant-request", false, true},
		{truck, "linkedge/v1/trucks/t1/grant-request", true, true},
		{truck, "linkedge/v1/trucks/t2/grant-request", true, false},
		{truck, "linkedge/v1/trucks/t1/grant", false, true},
		{truck, "linkedge/v1/trucks/t2/grant", false, false},
		{truck, "linkedge/v1/trucks/+/grant", false, false},
		{truck, "linkedge/v1/trucks/t1/grant-request", false, false},
		{ops, "linkedge/v1/trucks/t1/grant", true, false},
		{ops, "linkedge/v1/#", false, true},
		{ops, "linkedge/v1/models/m", true, false},
		{ops, "other/#", false, false},
		{User{Username: "x", Role: "admin"}, "linkedge/v1/#", false, false},
	}
	for _, tc := range tests {
		if got := aclAllows(tc.user, tc.topic, tc.write); got != tc.want {
			t.Errorf("aclAllows(%s %s, %q, write=%v) = %v, want %v",
				tc.user.Role, tc.user.Username, tc.topic, tc.write, got, tc.want)
		}
	}
}
