/*
 * stackproof.so: stackproof's commands inside crash (`extend stackproof.so`).
 *
 * The glue only adapts crash to the Rust core (src/capi.rs): memory through
 * readmem(KVADDR, RETURN_ON_ERROR|QUIET), symbols through value_search, the
 * CPUs' registers from the dump's NT_PRSTATUS notes, the tasks by walking
 * init_task.tasks, crash's own `bt` captured through its tmpfile. It makes no
 * stack decision and writes nothing the core did not.
 *
 * Built against the defs.h of the crash that loads it (struct layouts change
 * between versions): SP_CRASH_VERSION is that crash's version, checked at load.
 */
#include "defs.h"
#include <stdint.h>
#include <elf.h>
#include <time.h>

#ifndef SP_CRASH_VERSION
#error "build with -DSP_CRASH_VERSION='\"x.y.z\"' (the version of the crash whose defs.h this is)"
#endif

/* The crash version this module was built against (a test patches it). */
const char stackproof_crash_version[32] = SP_CRASH_VERSION;

/* ---- the core's C ABI (src/capi.rs) ---- */
struct sp_sym { const char *name; uint64_t start, size; const char *module; };
struct sp_host {
	void *ctx;
	int (*read)(void *, uint64_t, uint8_t *, size_t);
	int (*symbol)(void *, uint64_t, struct sp_sym *);
	int (*address_of)(void *, const char *, uint64_t *);
	void (*write)(void *, const char *);
	const char *vmlinux;
};
#define SP_PR_REG_WORDS 27
struct sp_task {
	uint64_t pid, task;
	int cpu;
	const char *comm;
	int has_regs;
	uint64_t regs[SP_PR_REG_WORDS];
	uint64_t saved_sp;
	const char *crash_bt, *crash_bt_error;
	int64_t stack_offset, canary_offset;	/* task_struct.stack, .stack_canary; -1: unknown */
};
struct sp_options {
	int verbose, json, all_tasks, colour, max_frames;
	const char *output;
};
struct sp_result { uint32_t tasks, frames, bogus, lost; int error; };
struct sp_regs_options {
	uint64_t address;
	int has_address, scan, annotate, json;
	const char *layout;
	int frames;		/* --frame N (frame >= 0) or --all (frame < 0) */
	int64_t frame;
	int has_range;		/* --from LO --to HI */
	uint64_t lo, hi;
	uint64_t max_words;	/* --annotate's --max-words; 0: the core's default */
};

void stackproof_init(void);
void stackproof_verify(const struct sp_host *, const struct sp_task *, size_t, const struct sp_options *,
		       struct sp_result *);
void stackproof_regs(const struct sp_host *, const struct sp_task *, const struct sp_regs_options *,
		     struct sp_result *);

/* ---- host callbacks ---- */
static int sp_read(void *ctx, uint64_t addr, uint8_t *buf, size_t len)
{
	return readmem(addr, KVADDR, buf, len, "stackproof", RETURN_ON_ERROR | QUIET) ? 1 : 0;
}

static char sp_modname[MAX_MOD_NAME + 1];

static int sp_symbol(void *ctx, uint64_t addr, struct sp_sym *out)
{
	ulong off;
	struct syment *sp, *nx;
	int i;

	if (!is_kernel_text(addr))
		return 0;
	if (!(sp = value_search(addr, &off)))
		return 0;
	for (nx = next_symbol(NULL, sp); nx && nx->value <= sp->value; nx = next_symbol(NULL, nx))
		;
	out->name = sp->name;
	out->start = sp->value;
	out->size = nx && nx->value - sp->value < (1UL << 20) ? nx->value - sp->value : 0;
	out->module = NULL;
	if (IS_MODULE_VADDR(addr)) {
		for (i = 0; i < st->mods_installed; i++) {
			struct load_module *lm = &st->load_modules[i];
			if (addr >= lm->mod_base && addr < lm->mod_base + lm->mod_size) {
				snprintf(sp_modname, sizeof(sp_modname), "%s", lm->mod_name);
				out->module = sp_modname;
				break;
			}
		}
	}
	return 1;
}

static int sp_address_of(void *ctx, const char *name, uint64_t *out)
{
	struct syment *sp = symbol_search((char *)name);
	if (!sp)
		return 0;
	*out = sp->value;
	return 1;
}

static void sp_write(void *ctx, const char *text)
{
	fprintf(fp, "%s\n", text);
}

static void sp_host_init(struct sp_host *h)
{
	h->ctx = NULL;
	h->read = sp_read;
	h->symbol = sp_symbol;
	h->address_of = sp_address_of;
	h->write = sp_write;
	h->vmlinux = pc->namelist;
}

/* ---- tasks ---- */
struct sp_taskinfo {
	ulong task, pid, saved_sp;
	int cpu;
	char comm[TASK_COMM_LEN + 1];
};

static struct {
	long tasks, pid, comm, thread, thread_sp, thread_group, stack, stack_canary, pr_reg;
} off;

static ulong *sp_cpu_current;	/* per CPU: current_task */

static int sp_ulong(ulong addr, ulong *v)
{
	return readmem(addr, KVADDR, v, sizeof(*v), "stackproof", RETURN_ON_ERROR | QUIET);
}

static int sp_task_info(ulong task, struct sp_taskinfo *ti)
{
	int pid = 0, i;

	memset(ti, 0, sizeof(*ti));
	ti->task = task;
	ti->cpu = -1;
	if (!readmem(task + off.pid, KVADDR, &pid, sizeof(pid), "stackproof", RETURN_ON_ERROR | QUIET))
		return 0;
	ti->pid = (ulong)pid;
	readmem(task + off.comm, KVADDR, ti->comm, TASK_COMM_LEN, "stackproof", RETURN_ON_ERROR | QUIET);
	ti->comm[TASK_COMM_LEN] = 0;
	if (!sp_ulong(task + off.thread + off.thread_sp, &ti->saved_sp))
		ti->saved_sp = 0;
	for (i = 0; i < kt->cpus; i++)
		if (sp_cpu_current && sp_cpu_current[i] == task)
			ti->cpu = i;
	return 1;
}

#define SP_MAX_TASKS 65536

/* Every task: init_task.tasks (crash 8.0.2's own table holds only the active tasks
 * on 6.1.y), each leader's threads, and each CPU's idle task (not on that list). */
static struct sp_taskinfo *sp_all_tasks(int *n, char *why, size_t whylen)
{
	struct sp_taskinfo *v;
	int cap = 256, count = 0, i;
	ulong init, head, next, cur, rq, rq_idle;
	long idle_off;

	*n = 0;
	if (!symbol_exists("init_task")) {
		snprintf(why, whylen, "no init_task symbol");
		return NULL;
	}
	v = (struct sp_taskinfo *)malloc(cap * sizeof(*v));
	if (!v) {
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
#define SP_ADD(t)                                                                   \
	do {                                                                        \
		int _j, _dup = 0;                                                   \
		for (_j = 0; _j < count; _j++)                                      \
			if (v[_j].task == (t))                                      \
				_dup = 1;                                           \
		if (!_dup && count < SP_MAX_TASKS) {                                \
			if (count == cap) {                                         \
				struct sp_taskinfo *_nv;                            \
				cap *= 2;                                           \
				_nv = (struct sp_taskinfo *)realloc(v, cap * sizeof(*v)); \
				if (!_nv)                                           \
					goto done;                                  \
				v = _nv;                                            \
			}                                                           \
			if (sp_task_info((t), &v[count]))                           \
				count++;                                            \
		}                                                                   \
	} while (0)

	init = symbol_value("init_task");
	head = init + off.tasks;
	SP_ADD(init);
	if (!sp_ulong(head, &next))
		snprintf(why, whylen, "init_task.tasks unreadable");
	for (i = 0; next != head && i < SP_MAX_TASKS; i++) {
		ulong leader = next - off.tasks;
		SP_ADD(leader);
		if (off.thread_group >= 0) {
			ulong thead = leader + off.thread_group, tnext;
			int k;
			if (sp_ulong(thead, &tnext))
				for (k = 0; tnext != thead && k < SP_MAX_TASKS; k++) {
					SP_ADD(tnext - off.thread_group);
					if (!sp_ulong(tnext, &tnext))
						break;
				}
		}
		if (!sp_ulong(next, &next)) {
			snprintf(why, whylen, "init_task.tasks broken at %lx", next);
			break;
		}
	}
	/* Each CPU's running and idle task. */
	idle_off = MEMBER_OFFSET("rq", "idle");
	rq = symbol_exists("runqueues") ? symbol_value("runqueues") : 0;
	for (i = 0; i < kt->cpus; i++) {
		if (sp_cpu_current && sp_cpu_current[i])
			SP_ADD(sp_cpu_current[i]);
		if (rq && idle_off >= 0 && sp_ulong(rq + kt->__per_cpu_offset[i] + idle_off, &rq_idle) && rq_idle)
			SP_ADD(rq_idle);
	}
	(void)cur;
done:
	*n = count;
	return v;
}

static void sp_cpu_currents(void)
{
	int i;
	ulong ct;

	if (!sp_cpu_current)
		sp_cpu_current = (ulong *)calloc(NR_CPUS, sizeof(ulong));
	if (!sp_cpu_current)
		return;
	ct = symbol_exists("current_task") ? symbol_value("current_task") : 0;
	for (i = 0; i < kt->cpus && i < NR_CPUS; i++) {
		sp_cpu_current[i] = 0;
		if (ct && !sp_ulong(ct + kt->__per_cpu_offset[i], &sp_cpu_current[i]))
			sp_cpu_current[i] = 0;
		if (!sp_cpu_current[i] && tt->active_set)
			sp_cpu_current[i] = tt->active_set[i];
	}
}

/* A CPU's registers from the dump's NT_PRSTATUS note (not crash's get_*dump_regs,
 * which fails on crash 8.0.2 with 6.1 kernels). */
/* What the notes hold does not change in a session, and crash's getters are slow
 * (diskdump_get_prstatus_percpu asks gdb for types on every call): once per CPU. */
static uint64_t sp_pr_regs[NR_CPUS][SP_PR_REG_WORDS];
static signed char sp_pr_state[NR_CPUS];	/* 0: not asked yet, 1: read, -1: none */

static int sp_prstatus_uncached(int cpu, uint64_t *regs);

static int sp_prstatus(int cpu, uint64_t *regs)
{
	if (cpu < 0 || cpu >= NR_CPUS)
		return 0;
	if (!sp_pr_state[cpu])
		sp_pr_state[cpu] = sp_prstatus_uncached(cpu, sp_pr_regs[cpu]) ? 1 : -1;
	if (sp_pr_state[cpu] < 0)
		return 0;
	memcpy(regs, sp_pr_regs[cpu], sizeof(sp_pr_regs[cpu]));
	return 1;
}

static int sp_prstatus_uncached(int cpu, uint64_t *regs)
{
	char *note = NULL;
	Elf64_Nhdr *nh;
	size_t desc;

	if (DISKDUMP_DUMPFILE())
		note = (char *)diskdump_get_prstatus_percpu(cpu);
	else if (NETDUMP_DUMPFILE() || KDUMP_DUMPFILE())
		note = (char *)netdump_get_prstatus_percpu(cpu);
	if (!note)
		return 0;
	nh = (Elf64_Nhdr *)note;
	if (nh->n_type != NT_PRSTATUS || nh->n_descsz < off.pr_reg + SP_PR_REG_WORDS * 8)
		return 0;
	desc = sizeof(*nh) + ((nh->n_namesz + 3) & ~3U);
	memcpy(regs, note + desc + off.pr_reg, SP_PR_REG_WORDS * 8); /* elf_prstatus.pr_reg */
	return 1;
}

/* ---- crash commands run from ours ---- */

/* Run a crash command line under a private setjmp (crash's errors longjmp to
 * pc->main_loop_env), our own args[] kept. Returns 1 when it stopped with an error. */
static int sp_call(const char *line)
{
	char buf[BUFSIZE], *saved_args[MAXARGS], *saved_curcmd = pc->curcmd;
	int saved_argcnt = argcnt, saved_optind = optind, failed = 0;
	jmp_buf saved_env;
	struct command_table_entry *ce;

	snprintf(buf, sizeof(buf), "%s", line);
	memcpy(saved_args, args, sizeof(saved_args));
	memcpy(&saved_env, &pc->main_loop_env, sizeof(jmp_buf));
	if (setjmp(pc->main_loop_env)) {
		failed = 1;
	} else {
		argcnt = parse_line(buf, args);
		optind = 0;
		if (argcnt < 1 || !(ce = get_command_table_entry(args[0]))) {
			failed = 1;
		} else {
			pc->curcmd = ce->name;
			ce->func();
		}
	}
	memcpy(&pc->main_loop_env, &saved_env, sizeof(jmp_buf));
	pc->curcmd = saved_curcmd;
	memcpy(args, saved_args, sizeof(saved_args));
	argcnt = saved_argcnt;
	optind = saved_optind;
	return failed;
}

/* crash's own bt of a task, its text; NULL with `err` set when it failed. */
static char *sp_crash_bt(ulong task, char *err, size_t errlen)
{
	char cmd[64], line[BUFSIZE];
	int failed = 0, saved_stdout = -1;
	char *text = NULL;
	size_t len = 0, cap = 0;
	FILE *errs = tmpfile();

	err[0] = 0;
	snprintf(cmd, sizeof(cmd), "bt %lx", task);
	/* crash writes its error lines to stdout, not to fp: catch them too. */
	fflush(stdout);
	if (errs)
		saved_stdout = dup(1);
	if (saved_stdout >= 0)
		dup2(fileno(errs), 1);
	open_tmpfile();
	failed = sp_call(cmd);
	fflush(stdout);
	if (saved_stdout >= 0) {
		dup2(saved_stdout, 1);
		close(saved_stdout);
		rewind(errs);
		while (fgets(line, sizeof(line), errs)) {
			line[strcspn(line, "\n")] = 0;
			if (line[0] && !err[0])
				snprintf(err, errlen, "%s", line);
			else if (line[0] && strlen(err) + strlen(line) + 3 < errlen)
				strcat(strcat(err, "; "), line);
		}
	}
	if (errs)
		fclose(errs);
	rewind(pc->tmpfile);
	while (fgets(line, sizeof(line), pc->tmpfile)) {
		size_t l = strlen(line);
		if (strstr(line, "bt: ") == line) { /* crash's error lines */
			if (!err[0]) {
				snprintf(err, errlen, "%s", line);
				err[strcspn(err, "\n")] = 0;
			}
			failed = failed || strstr(line, "failed") || strstr(line, "invalid");
		}
		if (len + l + 1 > cap) {
			char *nt;
			cap = (cap + l + 1) * 2;
			nt = (char *)realloc(text, cap);
			if (!nt)
				break;
			text = nt;
		}
		memcpy(text + len, line, l + 1);
		len += l;
	}
	close_tmpfile();
	if (failed && !err[0])
		snprintf(err, errlen, "crash's bt stopped with an error");
	if (!failed)
		err[0] = 0;
	if (failed) {
		free(text);
		return NULL;
	}
	if (!text)
		snprintf(err, errlen, "crash's bt printed nothing");
	return text;
}

/* stackproof-time N COMMAND...: run a crash command N times in this session, its
 * output discarded, and print the median and min wall time (bench/crash.py). */
static void cmd_sp_time(void)
{
	char line[BUFSIZE] = "";
	double t[64], tmp;
	int n, i, j, failed = 0;
	FILE *saved = fp, *null;
	struct timespec a, b;

	if (argcnt < 3 || (n = atoi(args[1])) < 1 || n > 64) {
		fprintf(fp, "stackproof-time: usage: stackproof-time N(1-64) COMMAND [ARGS]\n");
		return;
	}
	for (i = 2; i < argcnt; i++) {
		strncat(line, args[i], sizeof(line) - strlen(line) - 2);
		strcat(line, " ");
	}
	if (!(null = fopen("/dev/null", "w"))) {
		fprintf(fp, "stackproof-time: cannot open /dev/null\n");
		return;
	}
	for (i = 0; i < n; i++) {
		fp = null;
		clock_gettime(CLOCK_MONOTONIC, &a);
		failed |= sp_call(line);
		clock_gettime(CLOCK_MONOTONIC, &b);
		fp = saved;
		t[i] = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
	}
	fclose(null);
	for (i = 1; i < n; i++)
		for (j = i; j > 0 && t[j - 1] > t[j]; j--)
			tmp = t[j], t[j] = t[j - 1], t[j - 1] = tmp;
	fprintf(fp, "stackproof-time: %s: median %.3f ms, min %.3f ms, %d runs%s\n", line, t[n / 2], t[0], n,
		failed ? " (it stopped with an error)" : "");
}

static char *help_sp_time[] = {
	"stackproof-time",
	"time a crash command in this session (stackproof's benchmark)",
	"N COMMAND [ARGS]",
	"  Runs COMMAND N times (1-64), its output discarded, and prints the median and",
	"  the minimum wall time in milliseconds.",
	NULL
};

static char *sp_read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	char *text;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	if (n < 0 || n > (64L << 20) || !(text = (char *)malloc(n + 1))) {
		fclose(f);
		return NULL;
	}
	n = (long)fread(text, 1, n, f);
	text[n] = 0;
	fclose(f);
	return text;
}

static int sp_ready(const char *cmd)
{
	if (off.tasks < 0 || off.pid < 0 || off.comm < 0 || off.thread < 0 || off.thread_sp < 0) {
		fprintf(fp, "%s: this kernel's debug info lacks task_struct.tasks/pid/comm/thread.sp\n", cmd);
		return 0;
	}
	if (!DISKDUMP_DUMPFILE() && !NETDUMP_DUMPFILE() && !KDUMP_DUMPFILE())
		fprintf(fp, "%s: not a kdump/ELF vmcore: no saved CPU registers (sleeping tasks only)\n", cmd);
	sp_cpu_currents();
	return 1;
}

static void sp_fill_task(struct sp_task *t, struct sp_taskinfo *ti)
{
	memset(t, 0, sizeof(*t));
	t->pid = ti->pid;
	t->task = ti->task;
	t->cpu = ti->cpu;
	t->comm = ti->comm;
	t->saved_sp = ti->saved_sp;
	t->stack_offset = off.stack;
	t->canary_offset = off.stack_canary;
	if (ti->cpu >= 0)
		t->has_regs = sp_prstatus(ti->cpu, t->regs);
}

static int sp_parse_cpus(const char *s, char *want, int ncpus)
{
	char *end;
	while (*s) {
		long a = strtol(s, &end, 10), b = a;
		if (end == s)
			return 0;
		if (*end == '-') {
			s = end + 1;
			b = strtol(s, &end, 10);
			if (end == s)
				return 0;
		}
		if (a < 0 || b < a || b >= ncpus)
			return 0;
		for (; a <= b; a++)
			want[a] = 1;
		s = end;
		if (*s == ',')
			s++;
		else if (*s)
			return 0;
	}
	return 1;
}

static int sp_looks_like_task(const char *a, ulong *v)
{
	char *end;
	unsigned long long x;
	if (!strncmp(a, "0x", 2) || strlen(a) >= 12) {
		x = strtoull(a, &end, 16);
		if (*end == 0 && x >= 0xffff800000000000ULL) {
			*v = x;
			return 1;
		}
	}
	return 0;
}

/* ---- verify-bt ---- */
static void cmd_verify_bt(void)
{
	struct sp_host host;
	struct sp_options o;
	struct sp_result r;
	struct sp_taskinfo *all = NULL;
	struct sp_task *sel = NULL;
	char why[128] = "", *want_cpu = NULL, *crash_bt_file = NULL, *crash_bt_text = NULL;
	char **bt_text = NULL, bt_err[BUFSIZE];
	int i, n = 0, nsel = 0, strict = 0, exit_status = 0, all_cpus = 0, have_target = 0;
	ulong target = 0, target_pid = 0;
	int by_pid = 0;

	memset(&o, 0, sizeof(o));
	memset(&r, 0, sizeof(r));
	o.max_frames = 1024;
	for (i = 1; i < argcnt; i++) {
		char *a = args[i];
		if (!strcmp(a, "-v") || !strcmp(a, "--verbose"))
			o.verbose = 1;
		else if (!strcmp(a, "--json"))
			o.json = 1;
		else if (!strcmp(a, "--strict"))
			strict = 1;
		else if (!strcmp(a, "--exit-status"))
			exit_status = 1;
		else if (!strcmp(a, "--all-tasks"))
			o.all_tasks = 1;
		else if (!strcmp(a, "-a"))
			all_cpus = 1;
		else if ((!strcmp(a, "--output") || !strcmp(a, "--crash-bt") || !strcmp(a, "-c")
			  || !strcmp(a, "--max-frames")) && i + 1 < argcnt) {
			char *v = args[++i];
			if (!strcmp(a, "--output"))
				o.output = v;
			else if (!strcmp(a, "--crash-bt"))
				crash_bt_file = v;
			else if (!strcmp(a, "--max-frames")) {
				char *end;
				long m = strtol(v, &end, 10);
				if (*end || m < 1 || m > 1 << 20) {
					fprintf(fp, "verify-bt: --max-frames needs a number from 1 (see `help verify-bt`)\n");
					return;
				}
				o.max_frames = (int)m;
			} else {
				if (!want_cpu)
					want_cpu = (char *)calloc(kt->cpus > 0 ? kt->cpus : 1, 1);
				if (!want_cpu || !sp_parse_cpus(v, want_cpu, kt->cpus)) {
					fprintf(fp, "verify-bt: -c %s: not a CPU list of this dump (0-%d)\n", v, kt->cpus - 1);
					free(want_cpu);
					return;
				}
			}
		} else if (a[0] != '-' && !have_target) {
			have_target = 1;
			if (sp_looks_like_task(a, &target))
				;
			else {
				char *end;
				target_pid = strtoul(a, &end, 10);
				if (*end) {
					fprintf(fp, "verify-bt: %s: not a PID or a task_struct address (see `help verify-bt`)\n", a);
					free(want_cpu);
					return;
				}
				by_pid = 1;
			}
		} else {
			fprintf(fp, "verify-bt: unknown argument %s (see `help verify-bt`)\n", a);
			free(want_cpu);
			return;
		}
	}
	if (!sp_ready("verify-bt")) {
		free(want_cpu);
		return;
	}
	if (crash_bt_file && !(crash_bt_text = sp_read_file(crash_bt_file))) {
		fprintf(fp, "verify-bt: cannot read %s: %s\n", crash_bt_file, strerror(errno));
		free(want_cpu);
		return;
	}
	all = sp_all_tasks(&n, why, sizeof(why));
	if (why[0])
		fprintf(fp, "verify-bt: the task list is incomplete: %s\n", why);
	sel = (struct sp_task *)calloc(n > 0 ? n : 1, sizeof(*sel));
	bt_text = (char **)calloc(n > 0 ? n : 1, sizeof(char *));
	if (!all || !sel || !bt_text) {
		fprintf(fp, "verify-bt: no tasks found\n");
		goto out;
	}
	if (!have_target && !all_cpus && !want_cpu && !o.all_tasks) {
		target = CURRENT_TASK();
		have_target = 1;
	}
	for (i = 0; i < n; i++) {
		int take = o.all_tasks;
		if (have_target)
			take = by_pid ? all[i].pid == target_pid : all[i].task == target;
		if (all_cpus && all[i].cpu >= 0)
			take = 1;
		if (want_cpu && all[i].cpu >= 0 && want_cpu[all[i].cpu])
			take = 1;
		/* A PID shared by the idle tasks: each CPU's. */
		if (take)
			sp_fill_task(&sel[nsel++], &all[i]);
	}
	if (!nsel) {
		if (by_pid)
			fprintf(fp, "verify-bt: no task with PID %lu\n", target_pid);
		else if (have_target)
			fprintf(fp, "verify-bt: %lx: not a task of this dump\n", target);
		else
			fprintf(fp, "verify-bt: no task runs on those CPUs\n");
		goto out;
	}
	if (all_cpus || want_cpu) { /* CPU order, as bt -a */
		for (i = 1; i < nsel; i++) {
			struct sp_task t = sel[i];
			int j = i - 1;
			while (j >= 0 && sel[j].cpu > t.cpu) {
				sel[j + 1] = sel[j];
				j--;
			}
			sel[j + 1] = t;
		}
	}
	if (!o.all_tasks) {
		for (i = 0; i < nsel; i++) {
			if (crash_bt_text) {
				sel[i].crash_bt = crash_bt_text;
				continue;
			}
			bt_text[i] = sp_crash_bt(sel[i].task, bt_err, sizeof(bt_err));
			sel[i].crash_bt = bt_text[i];
			if (!bt_text[i])
				sel[i].crash_bt_error = strdup(bt_err);
		}
	}
	sp_host_init(&host);
	stackproof_verify(&host, sel, nsel, &o, &r);
	if (r.bogus && (strict || exit_status))
		fprintf(fp, "verify-bt: %u bogus frame%s\n", r.bogus, r.bogus == 1 ? "" : "s");
	if (exit_status && (r.bogus || r.error)) {
		fflush(fp);
		clean_exit(r.bogus ? 3 : 2);
	}
out:
	for (i = 0; i < nsel; i++)
		free((char *)sel[i].crash_bt_error);
	for (i = 0; bt_text && i < n; i++)
		free(bt_text[i]);
	free(bt_text);
	free(sel);
	free(all);
	free(want_cpu);
	free(crash_bt_text);
}

static char *help_verify_bt[] = {
	"verify-bt",
	"check which frames of a backtrace are real (stackproof)",
	"[PID | TASK | -c CPUS | -a | --all-tasks] [-v] [--json] [--strict] [--exit-status]\n"
	"        [--crash-bt FILE] [--output FILE] [--max-frames N]",
	"  Runs crash's own bt for the task (or reads it from --crash-bt FILE) and checks",
	"  every frame against the raw stack and the code: does the slot hold the return",
	"  address, is the instruction before it a call, does that call lead to the next",
	"  inner frame's function? Verdicts: ok, probable, unknown, bogus (marked `?`).",
	"  Then stackproof unwinds by itself, from the CPU's registers in the dump",
	"  (NT_PRSTATUS) for a running task, or from the switch frame at thread.sp for a",
	"  sleeping one, and prints where the two chains differ (invented, lost frames)",
	"  and the corrected chain. When crash's bt fails, one line says so and",
	"  stackproof's own chain is checked instead.",
	"",
	"    PID | TASK     a task (every task of the dump is known, not only crash's table)",
	"    (none)         crash's current context (set PID, set -c N)",
	"    -c CPUS        the tasks running on these CPUs (0,1 or 0-1); -a: every CPU",
	"    --all-tasks    every task: one line each, details of the tasks with a bogus",
	"                   or lost frame, a total (stackproof's own chains; no crash bt)",
	"    -v             the evidence of each verdict",
	"    --json         one JSON document, schema stackproof/verify-bt/1",
	"    --output FILE  also write that JSON document to FILE",
	"    --strict       say how many frames are bogus",
	"    --exit-status  in a script: exit crash with status 3 when a frame is bogus",
	"                   (2 on an error), after the output",
	"",
	"  Batch: crash -s vmlinux vmcore -i cmds < /dev/null, with cmds ending in",
	"  `verify-bt -a --output out.json --exit-status` then `quit`.",
	NULL
};

/* ---- regs-from-stack ---- */
static void cmd_regs_from_stack(void)
{
	struct sp_host host;
	struct sp_regs_options o;
	struct sp_result r;
	struct sp_taskinfo *all = NULL;
	struct sp_task t;
	char why[128] = "";
	int i, n = 0, found = 0, have_target = 0, by_pid = 0, has_from = 0, has_to = 0;
	ulong target = 0, target_pid = 0;

	memset(&o, 0, sizeof(o));
	memset(&r, 0, sizeof(r));
	o.layout = "pt_regs";
	for (i = 1; i < argcnt; i++) {
		char *a = args[i];
		if (!strcmp(a, "--scan"))
			o.scan = 1;
		else if (!strcmp(a, "--annotate"))
			o.annotate = 1;
		else if (!strcmp(a, "--json"))
			o.json = 1;
		else if (!strcmp(a, "--layout") && i + 1 < argcnt)
			o.layout = args[++i];
		else if (!strcmp(a, "--all")) {
			o.frames = 1;
			o.frame = -1;
		} else if (!strcmp(a, "--frame") && i + 1 < argcnt) {
			char *v = args[++i], *end;
			long long n = strtoll(v, &end, 10);
			if (*end || n < 0 || n > 1000000) {
				fprintf(fp, "regs-from-stack: --frame %s: not a frame number\n", v);
				return;
			}
			o.frames = 1;
			o.frame = n;
		}
		else if ((!strcmp(a, "--from") || !strcmp(a, "--to")) && i + 1 < argcnt) {
			char *v = args[++i], *end;
			uint64_t x = strtoull(v, &end, 16);
			if (*end || end == v) {
				fprintf(fp, "regs-from-stack: %s %s: not a hexadecimal address\n", a, v);
				return;
			}
			if (a[2] == 'f')
				o.lo = x, has_from = 1;
			else
				o.hi = x, has_to = 1;
		} else if (!strcmp(a, "--max-words") && i + 1 < argcnt) {
			char *v = args[++i], *end;
			long long m = strtoll(v, &end, 10);
			if (*end || end == v || m < 1 || m > 1LL << 30) {
				fprintf(fp, "regs-from-stack: --max-words %s: not a number from 1 to %lld\n", v, 1LL << 30);
				return;
			}
			o.max_words = (uint64_t)m;
		} else if ((!strcmp(a, "--task") || !strcmp(a, "--pid")) && i + 1 < argcnt) {
			char *v = args[++i], *end;
			have_target = 1;
			if (!sp_looks_like_task(v, &target)) {
				target_pid = strtoul(v, &end, 10);
				by_pid = 1;
				if (*end) {
					fprintf(fp, "regs-from-stack: %s: not a PID or a task_struct address\n", v);
					return;
				}
			}
		} else if (a[0] != '-' && !o.has_address) {
			char *end;
			o.address = strtoull(a, &end, 16);
			if (*end || !o.address) {
				fprintf(fp, "regs-from-stack: %s: not a hexadecimal address (see `help regs-from-stack`)\n", a);
				return;
			}
			o.has_address = 1;
		} else {
			fprintf(fp, "regs-from-stack: unknown argument %s (see `help regs-from-stack`)\n", a);
			return;
		}
	}
	/* As in gdb: --annotate also shows what --scan finds, or labels the set at ADDR. */
	if (o.has_address + (o.scan || o.annotate) + o.frames != 1 || (o.has_address && o.scan)) {
		fprintf(fp, "regs-from-stack: give one of ADDR, --scan, --annotate, --frame N, --all "
			"(see `help regs-from-stack`)\n");
		return;
	}
	if (has_from != has_to) {
		fprintf(fp, "regs-from-stack: --from and --to go together\n");
		return;
	}
	if (has_from && !(o.scan || o.annotate)) {
		fprintf(fp, "regs-from-stack: --from/--to go with --scan or --annotate\n");
		return;
	}
	if (o.max_words && !o.annotate) {
		fprintf(fp, "regs-from-stack: --max-words goes with --annotate\n");
		return;
	}
	o.has_range = has_from;
	if (!sp_ready("regs-from-stack"))
		return;
	if (!have_target)
		target = CURRENT_TASK();
	all = sp_all_tasks(&n, why, sizeof(why));
	for (i = 0; all && i < n; i++)
		if (by_pid ? all[i].pid == target_pid : all[i].task == target) {
			sp_fill_task(&t, &all[i]);
			found = 1;
			break;
		}
	if (!found) {
		fprintf(fp, "regs-from-stack: no such task in this dump\n");
		free(all);
		return;
	}
	sp_host_init(&host);
	stackproof_regs(&host, &t, &o, &r);
	free(all);
}

static char *help_regs_from_stack[] = {
	"regs-from-stack",
	"find and decode register sets saved on a kernel stack (stackproof)",
	"[ADDR [--layout pt_regs] | --scan | --annotate | --frame N | --all] [--task TASK | --pid PID]\n"
	"        [--from LO --to HI] [--max-words N] [--json]",
	"  ADDR           decode the struct pt_regs at ADDR (hexadecimal), with its checks",
	"  --scan         find every pt_regs on the stacks the task's chain crosses (its",
	"                 task stack, and the IRQ/exception stacks of a running CPU), each",
	"                 validated (cs/ss, rflags, ip in text, sp, orig_ax decoded); a set",
	"                 below the live sp is `stale`, a repeated iret frame a `copy`",
	"  --annotate     every word of the task's stack from its sp (the first stack --scan",
	"                 looks at, or --from/--to), labelled: `ra #N FUNC+off` where frame",
	"                 N of stackproof's own chain (verify-bt's numbers) returns, other",
	"                 return addresses (`ra ..., not in the backtrace`, `stale ra ...",
	"                 (below sp)`), `saved rbx of #N`, `canary` (the task's",
	"                 stack_canary), the slots of the sets --scan finds (`pt_regs.ip`);",
	"                 with ADDR, the slots of the set at ADDR. At most --max-words N",
	"                 words (default 131072); a run of unreadable words is one line",
	"  --from, --to   the range (hexadecimal, --to exclusive) for --scan, --annotate",
	"  --frame N      the callee-saved registers of frame N of stackproof's own chain",
	"                 (as `verify-bt` prints it), each with where it was saved:",
	"                 `rbx = 0x... saved at ADDR by 'push %rbx' at ADDR (frame #M)`",
	"  --all          the same for every frame of the chain",
	"  --task, --pid  another task than crash's current context",
	"  --json         one JSON document, schema stackproof/regs-from-stack/2",
	NULL
};

static struct command_table_entry sp_commands[] = {
	{ "verify-bt", cmd_verify_bt, help_verify_bt, 0 },
	{ "regs-from-stack", cmd_regs_from_stack, help_regs_from_stack, 0 },
	{ "stackproof-time", cmd_sp_time, help_sp_time, 0 },
	{ NULL }
};

void __attribute__((constructor)) stackproof_load(void)
{
	if (strcmp(build_version, stackproof_crash_version) != 0) {
		fprintf(fp ? fp : stdout,
			"stackproof.so: built for crash %s, this is crash %s: not loaded "
			"(rebuild it against this crash's defs.h: ./install.sh)\n",
			stackproof_crash_version, build_version);
		return;
	}
	stackproof_init();
	off.tasks = MEMBER_OFFSET("task_struct", "tasks");
	off.pid = MEMBER_OFFSET("task_struct", "pid");
	off.comm = MEMBER_OFFSET("task_struct", "comm");
	off.thread = MEMBER_OFFSET("task_struct", "thread");
	off.thread_sp = MEMBER_OFFSET("thread_struct", "sp");
	off.thread_group = MEMBER_OFFSET("task_struct", "thread_group");
	/* crash's debug info says where task_struct.stack is; without it (-1) the core
	 * falls back to its x86-64 6.x default (just after thread_info): there is no
	 * other way to the task's stack. stack_canary: without it no word is labelled
	 * `canary` (kdump's NT_PRSTATUS gs_base is the user one, not %gs:0x28's). */
	off.stack = MEMBER_OFFSET("task_struct", "stack");
	off.stack_canary = MEMBER_OFFSET("task_struct", "stack_canary");
	/* The registers in an NT_PRSTATUS note: the kernel's struct elf_prstatus when its
	 * debug info has it, else 112, where the x86-64 ELF core format puts pr_reg. */
	off.pr_reg = MEMBER_OFFSET("elf_prstatus", "pr_reg");
	if (off.pr_reg < 0)
		off.pr_reg = 112;
	register_extension(sp_commands);
}

void __attribute__((destructor)) stackproof_unload(void)
{
	free(sp_cpu_current);
	sp_cpu_current = NULL;
}
