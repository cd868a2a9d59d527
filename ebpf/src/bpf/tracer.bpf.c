// SPDX-License-Identifier: GPL-2.0
/*
 * popcorn tracer: page faults, on-CPU / run-queue time and fork/exec/exit of
 * managed processes. Counters are aggregated in per-CPU hash maps; only
 * process life-cycle events go through the ring buffer, with batched
 * wake-ups (see DESIGN.md section 8).
 *
 * Kernel types are hand-declared with CO-RE (preserve_access_index): only
 * the fields read here, relocated by the loader against the running kernel's
 * BTF, so the build needs neither vmlinux.h nor bpftool.
 *
 * The structs shared with Rust are mirrored in ebpf/src/raw.rs; keep both in
 * sync (sizes are asserted on both sides).
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

/* ---- kernel types (CO-RE) ---- */

typedef struct {
	int counter;
} atomic_t;

struct signal_struct {
	atomic_t live;
} __attribute__((preserve_access_index));

struct pid_namespace;

struct upid {
	int nr;
	struct pid_namespace *ns;
};

struct pid {
	unsigned int level;
	struct upid numbers[1];
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	int tgid;
	int exit_code;
	char comm[16];
	struct signal_struct *signal;
	struct pid *thread_pid;
	struct task_struct *group_leader;
} __attribute__((preserve_access_index));

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
} __attribute__((preserve_access_index));

struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
} __attribute__((preserve_access_index));

struct linux_binprm {
	const char *filename;
} __attribute__((preserve_access_index));

struct pt_regs;

/* ---- shared with Rust (ebpf/src/raw.rs) ---- */

/*
 * Ids: maps are keyed by the kernel's global ids (tgid, tid); the ids in the
 * loader's PID namespace (ns_*) are stored next to them when an entry is
 * created, for user space. Outside a child namespace both are the same.
 */

/* Per thread, per CPU: summed by user space. */
struct thread_stats {
	__u32 tgid;
	__u32 ns_tgid;
	__u32 ns_tid;
	__u32 _pad;
	__u64 oncpu_ns;
	__u64 runq_ns;
	__u64 faults;
	__u64 switches;
	/* Faults in one range not yet added to FAULT_RANGES (this CPU): saves
	 * a map update per fault; flushed when the range changes, the thread
	 * switches out or exits, and read by user space in the meantime. */
	__u64 cached_range;
	__u64 cached_faults;
};
_Static_assert(sizeof(struct thread_stats) == 64, "thread_stats size");

/* Per thread, shared by all CPUs: scheduling timestamps and the exit mark. */
struct thread_state {
	__u64 on_since;     /* switched in at (ns, CLOCK_MONOTONIC), 0 = off CPU */
	__u64 queued_since; /* woken / preempted at, 0 = not waiting */
	__u32 tgid;
	__u32 exited;
	__u32 ns_tgid;
	__u32 ns_tid;
};
_Static_assert(sizeof(struct thread_state) == 32, "thread_state size");

struct range_key {
	__u32 tgid;
	__u32 ns_tgid; /* follows from tgid: not a separate dimension */
	__u64 range; /* address >> RANGE_SHIFT */
};
_Static_assert(sizeof(struct range_key) == 16, "range_key size");

#define EV_FORK 1
#define EV_EXEC 2
#define EV_EXIT 3

struct event {
	__u32 kind;
	__u32 tgid; /* process the event is about (the child for a fork) */
	__u32 tid;
	__u32 aux; /* fork: parent tgid; exec: old pid; exit: exit code */
	__u64 ts_ns;
	__u32 ns_tgid;
	__u32 ns_tid;
	__u32 ns_parent; /* fork: parent tgid in the loader's namespace */
	__u32 _pad;
	char comm[16];
	char filename[96];
};
_Static_assert(sizeof(struct event) == 152, "event size");

/* One record of the ns_pids iterator. */
struct ns_pid {
	__u32 tgid;
	__u32 ns_tgid;
};

/* The loader's PID namespace, learnt by the iterator (current = loader). */
struct ns_info {
	__u64 ns;
	__u32 level;
	__u32 known;
};

#define CNT_RING_DROPS 0
#define CNT_EVENTS 1
#define CNT_MAP_FULL 2
#define CNT_MAX 4

/* ---- maps ----
 * The hashes are not preallocated: a per-CPU hash costs max_entries x CPUs x
 * value size when preallocated. Sizes are set by the loader. */

/* Managed processes: global tgid -> tgid in the loader's namespace. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u32);
} MANAGED SEC(".maps");

/* The hot-path filter: one byte per pid (sized to pid_max by the loader), an
 * array lookup the verifier inlines. MANAGED stays the authoritative list;
 * a tgid beyond the array (pid_max raised later) falls back to it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 32768);
	__type(key, __u32);
	__type(value, __u8);
} MANAGED_FAST SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 32768);
	__type(key, __u32);
	__type(value, struct thread_stats);
} THREADS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 32768);
	__type(key, __u32);
	__type(value, struct thread_state);
} THREAD_STATE SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct range_key);
	__type(value, __u64);
} FAULT_RANGES SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} EVENTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ns_info);
} NS_INFO SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} COUNTERS SEC(".maps");

/* Set by the loader (EbpfLoader::override_global). */
const volatile __u64 WAKE_THRESHOLD = 64 * 1024;
const volatile __u32 RANGE_SHIFT = 21;
/* 1 when the loader is not in the initial PID namespace. */
const volatile __u32 TRANSLATE = 0;

/* ---- helpers ---- */

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&COUNTERS, &idx);
	if (c)
		*c += 1;
}

static __always_inline int managed(__u32 tgid)
{
	__u8 *fast = bpf_map_lookup_elem(&MANAGED_FAST, &tgid);
	if (fast)
		return *fast;
	return bpf_map_lookup_elem(&MANAGED, &tgid) != 0;
}

static __always_inline void set_managed(__u32 tgid, __u8 on)
{
	__u8 *fast = bpf_map_lookup_elem(&MANAGED_FAST, &tgid);
	if (fast)
		*fast = on;
}

/* The number of `pid` in the loader's namespace, 0 if not visible there. */
static __always_inline __u32 ns_nr(struct pid *pid, struct ns_info *info)
{
	if (!pid || BPF_CORE_READ(pid, level) < info->level)
		return 0;
	struct upid up = {};
	void *at = (void *)pid + bpf_core_field_offset(struct pid, numbers) +
		   (__u64)(info->level & 63) * sizeof(struct upid);
	if (bpf_probe_read_kernel(&up, sizeof(up), at) || (__u64)up.ns != info->ns)
		return 0;
	return up.nr;
}

/* (tgid, tid) of a task in the loader's PID namespace. Slow path only: on
 * creation of map entries and for life-cycle events. */
static __noinline void ns_ids(struct task_struct *t, __u32 *ns_tgid, __u32 *ns_tid)
{
	*ns_tgid = 0;
	*ns_tid = 0;
	if (!t)
		t = bpf_get_current_task_btf();
	if (!TRANSLATE) {
		*ns_tgid = BPF_CORE_READ(t, tgid);
		*ns_tid = BPF_CORE_READ(t, pid);
		return;
	}
	__u32 zero = 0;
	struct ns_info *info = bpf_map_lookup_elem(&NS_INFO, &zero);
	if (!info || !info->known)
		return;
	*ns_tid = ns_nr(BPF_CORE_READ(t, thread_pid), info);
	*ns_tgid = ns_nr(BPF_CORE_READ(t, group_leader, thread_pid), info);
}

static __always_inline struct thread_stats *stats_of(struct task_struct *t, __u32 tid, __u32 tgid)
{
	struct thread_stats *s = bpf_map_lookup_elem(&THREADS, &tid);
	if (!s) {
		struct thread_stats zero = {};
		if (bpf_map_update_elem(&THREADS, &tid, &zero, BPF_NOEXIST) == -7 /* E2BIG */)
			count(CNT_MAP_FULL);
		s = bpf_map_lookup_elem(&THREADS, &tid);
		if (!s)
			return 0;
	}
	/* A new per-CPU entry is zero on every CPU: stamp this CPU's slot. */
	if (s->tgid != tgid) {
		s->tgid = tgid;
		ns_ids(t, &s->ns_tgid, &s->ns_tid);
	}
	return s;
}

static __always_inline struct thread_state *state_of(struct task_struct *t, __u32 tid, __u32 tgid)
{
	struct thread_state *st = bpf_map_lookup_elem(&THREAD_STATE, &tid);
	if (st)
		return st;
	struct thread_state zero = {.tgid = tgid};
	ns_ids(t, &zero.ns_tgid, &zero.ns_tid);
	if (bpf_map_update_elem(&THREAD_STATE, &tid, &zero, BPF_NOEXIST) == -7)
		count(CNT_MAP_FULL);
	return bpf_map_lookup_elem(&THREAD_STATE, &tid);
}

/* Batched wake-ups: wake the reader only once enough data is waiting; the
 * reader also polls every few ms, so nothing stays behind for long. */
static __always_inline __u64 wake_flags(void)
{
	return bpf_ringbuf_query(&EVENTS, BPF_RB_AVAIL_DATA) >= WAKE_THRESHOLD ? BPF_RB_FORCE_WAKEUP
									       : BPF_RB_NO_WAKEUP;
}

static __always_inline struct event *reserve(__u32 kind, struct task_struct *t, __u32 tgid, __u32 tid,
					     __u32 aux)
{
	struct event *e = bpf_ringbuf_reserve(&EVENTS, sizeof(*e), 0);
	if (!e) {
		count(CNT_RING_DROPS);
		return 0;
	}
	e->kind = kind;
	e->tgid = tgid;
	e->tid = tid;
	e->aux = aux;
	e->ts_ns = bpf_ktime_get_ns();
	ns_ids(t, &e->ns_tgid, &e->ns_tid);
	e->ns_parent = 0;
	e->_pad = 0;
	e->comm[0] = 0;
	e->filename[0] = 0;
	return e;
}

static __always_inline void submit(struct event *e)
{
	bpf_ringbuf_submit(e, wake_flags());
	count(CNT_EVENTS);
}

/* ---- page faults ---- */

static __always_inline void add_range_faults(__u32 tgid, __u32 ns_tgid, __u64 range, __u64 n)
{
	struct range_key key = {.tgid = tgid, .ns_tgid = ns_tgid, .range = range};
	__u64 *c = bpf_map_lookup_elem(&FAULT_RANGES, &key);
	if (c) {
		*c += n;
		return;
	}
	long err = bpf_map_update_elem(&FAULT_RANGES, &key, &n, BPF_NOEXIST);
	if (err == -7 /* E2BIG */) {
		count(CNT_MAP_FULL);
	} else if (err != 0) {
		/* Another CPU created it first: count in our own slot. */
		c = bpf_map_lookup_elem(&FAULT_RANGES, &key);
		if (c)
			*c += n;
	}
}

/* Moves this CPU's cached range count of a thread to FAULT_RANGES. */
static __always_inline void flush_range(struct thread_stats *s, __u32 tgid)
{
	if (!s->cached_faults)
		return;
	add_range_faults(tgid, s->ns_tgid, s->cached_range, s->cached_faults);
	s->cached_faults = 0;
}

SEC("tp_btf/page_fault_user")
int BPF_PROG(page_fault_user, unsigned long address, struct pt_regs *regs, unsigned long error_code)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	if (!managed(tgid))
		return 0;

	__u64 range = address >> (RANGE_SHIFT & 63);
	struct thread_stats *s = stats_of(0 /* current */, tid, tgid);
	if (!s)
		return 0; /* THREADS full: counted in CNT_MAP_FULL */
	s->faults += 1;
	if (s->cached_faults && s->cached_range != range)
		flush_range(s, tgid);
	s->cached_range = range;
	s->cached_faults += 1;
	return 0;
}

/* ---- scheduling ---- */

#define TASK_RUNNING 0

SEC("tp_btf/sched_switch")
int BPF_PROG(sched_switch, _Bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 prev_tgid = prev->tgid, prev_tid = prev->pid;
	__u32 next_tgid = next->tgid, next_tid = next->pid;

	if (prev_tid != 0 && managed(prev_tgid)) {
		struct thread_stats *cached = bpf_map_lookup_elem(&THREADS, &prev_tid);
		if (cached)
			flush_range(cached, prev_tgid);
		struct thread_state *st = state_of(prev, prev_tid, prev_tgid);
		if (st) {
			if (st->on_since && now > st->on_since) {
				struct thread_stats *s = stats_of(prev, prev_tid, prev_tgid);
				if (s) {
					s->oncpu_ns += now - st->on_since;
					s->switches += 1;
				}
			}
			st->on_since = 0;
			/* Preempted, or switched out while runnable: it waits in the
			 * run queue again. */
			if (preempt || prev_state == TASK_RUNNING)
				st->queued_since = now;
		}
	}
	if (next_tid != 0 && managed(next_tgid)) {
		struct thread_state *st = state_of(next, next_tid, next_tgid);
		if (st) {
			if (st->queued_since && now > st->queued_since) {
				struct thread_stats *s = stats_of(next, next_tid, next_tgid);
				if (s)
					s->runq_ns += now - st->queued_since;
			}
			st->queued_since = 0;
			st->on_since = now;
		}
	}
	return 0;
}

static __always_inline void woken(struct task_struct *p)
{
	__u32 tgid = p->tgid, tid = p->pid;
	if (!managed(tgid))
		return;
	struct thread_state *st = state_of(p, tid, tgid);
	if (st && !st->queued_since)
		st->queued_since = bpf_ktime_get_ns();
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(sched_wakeup, struct task_struct *p)
{
	woken(p);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(sched_wakeup_new, struct task_struct *p)
{
	woken(p);
	return 0;
}

/* ---- process life cycle ---- */

SEC("tp_btf/sched_process_fork")
int BPF_PROG(sched_process_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = parent->tgid, ctgid = child->tgid;
	if (ptgid == ctgid || !managed(ptgid))
		return 0; /* a new thread, or not ours */
	__u32 ns_tgid, ns_tid;
	ns_ids(child, &ns_tgid, &ns_tid);
	if (bpf_map_update_elem(&MANAGED, &ctgid, &ns_tgid, BPF_ANY) != 0) {
		count(CNT_MAP_FULL);
		return 0;
	}
	set_managed(ctgid, 1);
	struct event *e = reserve(EV_FORK, child, ctgid, child->pid, ptgid);
	if (!e)
		return 0;
	__u32 *ns_parent = bpf_map_lookup_elem(&MANAGED, &ptgid);
	if (ns_parent)
		e->ns_parent = *ns_parent;
	bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), child->comm);
	submit(e);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(sched_process_exec, struct task_struct *p, int old_pid, struct linux_binprm *bprm)
{
	__u32 tgid = p->tgid;
	if (!managed(tgid))
		return 0;
	struct event *e = reserve(EV_EXEC, p, tgid, p->pid, (__u32)old_pid);
	if (!e)
		return 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	const char *filename = BPF_CORE_READ(bprm, filename);
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), filename);
	submit(e);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(sched_process_exit, struct task_struct *p)
{
	__u32 tgid = p->tgid, tid = p->pid;
	if (!managed(tgid))
		return 0;
	/* No user fault can follow: move the cached range count to the map. */
	struct thread_stats *s = bpf_map_lookup_elem(&THREADS, &tid);
	if (s)
		flush_range(s, tgid);
	/* Keep the thread's figures until user space has read them once. */
	struct thread_state *st = state_of(p, tid, tgid);
	if (st)
		st->exited = 1;
	/* signal->live drops to 0 when the last thread exits (group dead). */
	if (BPF_CORE_READ(p, signal, live.counter) != 0)
		return 0;
	set_managed(tgid, 0);
	bpf_map_delete_elem(&MANAGED, &tgid);
	struct event *e = reserve(EV_EXIT, p, tgid, tid, (__u32)p->exit_code);
	if (!e)
		return 0;
	bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), p->comm);
	submit(e);
	return 0;
}

/* ---- ids in the loader's PID namespace ---- */

/* Run by user space (reading the iterator: current is the loader). Learns
 * the loader's namespace on first use, then writes one ns_pid per process
 * visible in it. */
SEC("iter/task")
int ns_pids(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;
	if (!task)
		return 0;
	__u32 zero = 0;
	struct ns_info *info = bpf_map_lookup_elem(&NS_INFO, &zero);
	if (!info)
		return 0;
	if (!info->known) {
		struct task_struct *cur = bpf_get_current_task_btf();
		struct pid *pid = BPF_CORE_READ(cur, thread_pid);
		if (!pid)
			return 0;
		__u32 level = BPF_CORE_READ(pid, level);
		struct upid up = {};
		void *at = (void *)pid + bpf_core_field_offset(struct pid, numbers) +
			   (__u64)(level & 63) * sizeof(struct upid);
		if (bpf_probe_read_kernel(&up, sizeof(up), at))
			return 0;
		info->ns = (__u64)up.ns;
		info->level = level;
		info->known = 1;
	}
	if (task->pid != task->tgid)
		return 0; /* one record per process */
	struct ns_pid rec = {.tgid = task->tgid};
	rec.ns_tgid = ns_nr(BPF_CORE_READ(task, thread_pid), info);
	if (rec.ns_tgid)
		bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}
