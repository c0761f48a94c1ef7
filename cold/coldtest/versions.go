package coldtest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/tierlog/tierlog/cold"
	"github.com/tierlog/tierlog/internal/testutil"
)

// listVersions is cold.IterVersions under prefix, as "key version
// [marker] [latest]" lines, with the entries themselves.
func listVersions(t *testing.T, b cold.Bucket, prefix string) ([]string, []cold.ObjectVersion) {
	t.Helper()
	var lines []string
	var all []cold.ObjectVersion
	err := cold.IterVersions(context.Background(), b, prefix, func(v cold.ObjectVersion) error {
		line := v.Key + " " + v.VersionID
		if v.DeleteMarker {
			line += " marker"
		}
		if v.Latest {
			line += " latest"
		}
		lines, all = append(lines, line), append(all, v)
		return nil
	})
	if err != nil {
		t.Fatalf("IterVersions(%q): %v", prefix, err)
	}
	return lines, all
}

// testUnversionedListing: on a bucket that keeps no versions (every
// backend's AcceptanceTest bucket), cold.IterVersions lists each object
// under the prefix once, as the latest and only version, and a delete of
// that entry removes the object.
func testUnversionedListing(t *testing.T, b cold.Bucket) {
	ctx := context.Background()
	if keeps, err := cold.KeepsVersions(ctx, b); keeps || err != nil {
		t.Errorf("KeepsVersions on a bucket without versioning: %v, %v", keeps, err)
	}
	p := Root + "versions/"
	keys := []string{p + "a", p + "b/c"}
	for _, k := range append(keys, Root+"versionsX") { // the last is outside p
		upload(t, b, k, []byte(k))
	}
	_, got := listVersions(t, b, p)
	if len(got) != len(keys) {
		t.Fatalf("IterVersions(%q): %+v, want one entry for each of %q", p, got, keys)
	}
	for i, v := range got {
		if v.Key != keys[i] || !v.Unversioned() {
			t.Errorf("entry %d: %+v, want the one version of %s", i, v, keys[i])
		}
		if err := cold.DeleteVersion(ctx, b, v.Key, ""); err != nil {
			t.Fatal(err)
		}
	}
	if lines, _ := listVersions(t, b, p); len(lines) != 0 {
		t.Errorf("after deleting each key: %q left", lines)
	}
}

// versionListTest: on a versioned bucket, IterVersions lists every
// version and delete marker under the prefix (keys relative to the
// bucket's prefix, in order, newest first), also of keys that Iter no
// longer shows; deleting each entry by its version id leaves nothing.
func versionListTest(t *testing.T, b cold.Bucket, first, second cold.Attributes) {
	ctx := context.Background()
	p := Root + "versioned/"
	other := upload(t, b, p+"other", []byte("o"))
	upload(t, b, Root+"versionedX", []byte("outside the prefix"))
	lines, all := listVersions(t, b, p)
	if len(all) != 4 || !all[0].DeleteMarker {
		t.Fatalf("IterVersions(%q): %q, want a delete marker and two versions of %s, one version of %s", p, lines, p+"object", p+"other")
	}
	want := []string{
		fmt.Sprintf("%sobject %s marker latest", p, all[0].VersionID),
		fmt.Sprintf("%sobject %s", p, second.VersionID),
		fmt.Sprintf("%sobject %s", p, first.VersionID),
		fmt.Sprintf("%sother %s latest", p, other.VersionID),
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("IterVersions(%q):\n%s\nwant\n%s", p, strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if all[0].Unversioned() || all[3].Unversioned() {
		t.Errorf("entries of a versioned bucket say they are unversioned: %+v", all)
	}
	if all[1].Size != cold.MinPartSize+1 || all[2].Size != 2 {
		t.Errorf("version sizes %d, %d; want %d, 2", all[1].Size, all[2].Size, cold.MinPartSize+1)
	}
	for _, v := range all {
		if err := cold.DeleteVersion(ctx, b, v.Key, v.VersionID); err != nil {
			t.Fatalf("DeleteVersion %s %s: %v", v.Key, v.VersionID, err)
		}
	}
	if lines, _ := listVersions(t, b, p); len(lines) != 0 {
		t.Errorf("after deleting every version and marker: %q left", lines)
	}
}

// NullVersionTest checks a backend on a bucket whose versioning was
// turned on after objects were written, as an operator may turn it on
// under a running node (and suspend it, and turn it on again): S3's
// "null" versions and delete markers, which IterVersions lists with the
// version id "null" and DeleteVersion removes by it. open opens the named
// bucket of m's server with the credentials given.
//
// Credentials that may not ask for the bucket's versioning status (no
// s3:GetBucketVersioning) get an error from KeepsVersions wrapping
// fs.ErrPermission: what a deletion tells apart from a failure.
func NullVersionTest(t *testing.T, m *testutil.MinIO, open func(t *testing.T, bucket string, c *cold.Credentials) cold.Bucket) {
	ctx := context.Background()
	name := m.NewBucket(t)
	b := open(t, name, &cold.Credentials{AccessKeyID: m.AccessKey, SecretAccessKey: m.SecretKey})
	p := Root + "null/"
	object, marked := p+"object", p+"marked"
	upload(t, b, object, []byte("written before versioning"))
	upload(t, b, marked, []byte("deleted while versioning was suspended"))
	admin := m.Client()
	if err := admin.SuspendVersioning(ctx, name); err != nil {
		t.Fatal(err)
	}
	if keeps, err := cold.KeepsVersions(ctx, b); !keeps || err != nil {
		t.Errorf("KeepsVersions with versioning suspended: %v, %v; want true", keeps, err)
	}
	if err := b.Delete(ctx, marked); err != nil { // a null delete marker takes the null version's place
		t.Fatal(err)
	}
	if err := admin.EnableVersioning(ctx, name); err != nil {
		t.Fatal(err)
	}
	newer := upload(t, b, object, []byte("written after"))
	lines, all := listVersions(t, b, p)
	want := []string{marked + " null marker latest", object + " " + newer.VersionID + " latest", object + " null"}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("IterVersions(%q):\n%s\nwant\n%s", p, strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	for _, v := range all {
		if err := cold.DeleteVersion(ctx, b, v.Key, v.VersionID); err != nil {
			t.Fatalf("DeleteVersion %s %s: %v", v.Key, v.VersionID, err)
		}
	}
	if lines, _ := listVersions(t, b, p); len(lines) != 0 {
		t.Errorf("after deleting every version and marker by its id: %q left", lines)
	}

	ak, sk, token := m.Restricted(t, name, "s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:DeleteObject")
	r := open(t, name, &cold.Credentials{AccessKeyID: ak, SecretAccessKey: sk, SessionToken: token})
	if keeps, err := cold.KeepsVersions(ctx, r); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("KeepsVersions without s3:GetBucketVersioning: %v, %v; want an error wrapping fs.ErrPermission", keeps, err)
	}
}
