package datastore

import (
	"errors"
	"testing"
)

func TestEnrollments(t *testing.T) {
	ctx := t.Context()
	s, _, _ := openTest(t)
	if ok, err := s.Enrolled(ctx, "aa"); ok || err != nil {
		t.Fatalf("Enrolled before enrolling = %v, %v", ok, err)
	}
	if err := s.Enroll(ctx, []*Enrollment{{EKHash: "aa", Comment: "rack 1"}, {EKHash: "bb", EKCert: []byte{1}}}); err != nil {
		t.Fatal(err)
	}
	// A batch with one duplicate stores nothing.
	err := s.Enroll(ctx, []*Enrollment{{EKHash: "cc"}, {EKHash: "aa"}})
	if !errors.Is(err, ErrAlreadyExists) || err.Error() != "datastore: already exists: EK aa is already enrolled" {
		t.Fatalf("Enroll duplicate = %v", err)
	}
	if ok, _ := s.Enrolled(ctx, "cc"); ok {
		t.Fatal("a failed batch enrolled part of itself")
	}
	list, err := s.ListEnrollments(ctx)
	if err != nil || len(list) != 2 || list[0].EKHash != "aa" || list[0].Comment != "rack 1" || string(list[1].EKCert) != "\x01" {
		t.Fatalf("ListEnrollments = %+v, %v", list, err)
	}
	if err := s.Unenroll(ctx, "aa"); err != nil {
		t.Fatal(err)
	}
	if err := s.Unenroll(ctx, "aa"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Unenroll twice = %v, want ErrNotFound", err)
	}
	if ok, _ := s.Enrolled(ctx, "aa"); ok {
		t.Fatal("still enrolled after Unenroll")
	}
}
