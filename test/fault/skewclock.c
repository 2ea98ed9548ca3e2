/*
 * skewclock.c - an LD_PRELOAD library that moves a process's wall clock by
 * INTEROP_CLOCK_SKEW seconds (may be negative), for test/t/009_faults.pl.
 *
 * Only the wall clock moves (time, gettimeofday, clock_gettime of the
 * REALTIME clocks); the monotonic clocks do not, as on a machine whose
 * clock is simply wrong.  The offset is read once, when the library is
 * loaded, and inherited by every forked process: PostgreSQL overwrites its
 * environment with process titles later.  libfaketime was tried first: it
 * stops faking in the postmaster's signal handlers, so background workers
 * forked there ran on the true clock.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static long skew;
static int	(*real_clock_gettime) (clockid_t, struct timespec *);
static int	(*real_gettimeofday) (struct timeval *, void *);

__attribute__((constructor))
static void
skew_init(void)
{
	const char *s = getenv("INTEROP_CLOCK_SKEW");

	skew = s ? strtol(s, NULL, 10) : 0;
	real_clock_gettime = (int (*) (clockid_t, struct timespec *)) dlsym(RTLD_NEXT, "clock_gettime");
	real_gettimeofday = (int (*) (struct timeval *, void *)) dlsym(RTLD_NEXT, "gettimeofday");
}

int
clock_gettime(clockid_t clk, struct timespec *ts)
{
	int			rc = real_clock_gettime(clk, ts);

	if (rc == 0 && (clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_COARSE))
		ts->tv_sec += skew;
	return rc;
}

int
gettimeofday(struct timeval *tv, void *tz)
{
	int			rc = real_gettimeofday(tv, tz);

	if (rc == 0)
		tv->tv_sec += skew;
	return rc;
}

time_t
time(time_t *t)
{
	struct timespec ts;
	time_t		now;

	real_clock_gettime(CLOCK_REALTIME, &ts);
	now = ts.tv_sec + skew;
	if (t != NULL)
		*t = now;
	return now;
}
