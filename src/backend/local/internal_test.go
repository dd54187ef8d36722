package local

import (
	"os"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/ironcf/ironworker-release/src/backend"
)

// Pieces that the process-level specs cannot reach on every machine (cgroup v2 is not
// available everywhere), checked directly.
var _ = Describe("local backend internals", func() {
	It("counts OOM kills from memory.events", func() {
		f := filepath.Join(GinkgoT().TempDir(), "memory.events")
		Expect(os.WriteFile(f, []byte("low 0\nhigh 0\nmax 12\noom 1\noom_kill 0\n"), 0o600)).To(Succeed())
		Expect(cgroupOOMKills(f)).To(BeZero(), "hitting max or an oom event without a kill is not an OOM kill")
		Expect(os.WriteFile(f, []byte("low 0\nhigh 0\nmax 40\noom 2\noom_kill 1\noom_group_kill 1\n"), 0o600)).To(Succeed())
		Expect(cgroupOOMKills(f)).To(BeEquivalentTo(2))
		Expect(cgroupOOMKills(f + ".missing")).To(BeZero())
	})

	It("refuses a cgroup parent that is not cgroup v2", func() {
		_, err := prepareCgroupParent(GinkgoT().TempDir())
		Expect(err).To(MatchError(ContainSubstring("not on a cgroup v2 mount")))
		_, err = detectLimiter(LimiterCgroup2, GinkgoT().TempDir())
		Expect(err).To(HaveOccurred())
		_, err = detectLimiter("bogus", "")
		Expect(err).To(MatchError(ContainSubstring("want auto, cgroup2, prlimit or none")))
		m, err := detectLimiter(LimiterNone, "")
		Expect(err).NotTo(HaveOccurred())
		Expect(m.kind).To(Equal(LimiterNone))
	})

	It("recognises allocation failures of common runtimes", func() {
		for _, s := range []string{
			"Out of memory!",
			"fatal error: runtime: out of memory",
			"MemoryError",
			"Exception in thread \"main\" java.lang.OutOfMemoryError: Java heap space",
			"sh: 1: Cannot allocate memory",
			"terminate called after throwing an instance of 'std::bad_alloc'",
			"FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
		} {
			Expect(looksLikeOOM(s)).To(BeTrue(), s)
		}
		Expect(looksLikeOOM("KeyError: 'name'")).To(BeFalse())
	})

	DescribeTable("zip entry names",
		func(name, want string, ok bool) {
			got, err := entryPath(name)
			if !ok {
				Expect(err).To(MatchError(backend.ErrBadCode))
				return
			}
			Expect(err).NotTo(HaveOccurred())
			Expect(got).To(Equal(want))
		},
		Entry("file", "a.txt", "a.txt", true),
		Entry("nested", "lib/x/y.rb", "lib/x/y.rb", true),
		Entry("directory", "lib/", "lib", true),
		Entry("dot", "./", "", true),
		Entry("windows nested", `lib\y.rb`, "lib/y.rb", true),
		Entry("parent", "../x", "", false),
		Entry("inner parent", "a/../b", "", false),
		Entry("absolute", "/etc/passwd", "", false),
		Entry("drive", `C:\x`, "", false),
		Entry("nul", "a\x00b", "", false),
	)

	It("keeps the last non-empty stderr line, capped", func() {
		l := newTaskLog(nil, 10)
		l.write(backend.Stderr, []byte("first\n\n  second  \r\n   \n"))
		last, _ := l.finish()
		Expect(last).To(Equal("second"))
		l.write(backend.Stderr, bytesOf('x', 3000))
		last, _ = l.finish()
		Expect(last).To(HaveLen(maxLineBytes + len(" …")))
	})
})

func bytesOf(c byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}
