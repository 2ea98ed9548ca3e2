# interop: PGXS build.  The version comes from interop.control alone.
#
#   make            build interop.so and the install script
#   make install    install into the PostgreSQL that pg_config names
#   make check      install missing packages, build with -Werror, install, run every suite
#   make check PG_MAJOR=17   the same on another PostgreSQL major (in a Debian chroot)
#   make check-all  make check on every supported major: 15, 17 and 18 (what CI runs)
#   make demo       the end-to-end demonstration (scripts/demo)
#   make valgrind   pg_regress with the server under valgrind (after make install)
#   make sanitize   every suite of make check with interop.so built with UBSan
#   make fuzz       libFuzzer on the parsers, FUZZ_SECONDS each (test/fuzz/run)

EXTENSION = interop
EXTVERSION := $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" $(dir $(lastword $(MAKEFILE_LIST)))interop.control)

MODULE_big = interop
OBJS = src/interop.o src/worker.o src/crypto.o src/member_id.o src/jws.o src/keys.o src/x509.o src/protocol.o src/publish.o src/changes.o src/catalog.o src/msglog.o src/seal.o src/consent.o src/gateway.o src/peerhttp.o src/client.o src/transfer.o src/async.o src/crlfetch.o src/ocsp.o src/tsa.o src/witness.o src/subscribe.o src/stats.o src/sync.o src/ha.o src/token.o

# the install script is assembled from the parts beside the C, in this order
SQL_PARTS = src/schema.sql src/member_id.sql src/jws.sql src/x509.sql src/keys.sql src/publish.sql src/client.sql src/msglog.sql src/consent.sql src/seal.sql src/async.sql src/stats.sql src/subscribe.sql src/witness.sql
DATA_built = interop--$(EXTVERSION).sql
# released install scripts stay as they shipped; upgrade scripts are written by hand
# (looked for beside this Makefile, so that a build in another directory finds them)
srcdir_ := $(dir $(lastword $(MAKEFILE_LIST)))
DATA = $(patsubst $(srcdir_)%,%,$(wildcard $(srcdir_)released/interop--*.sql $(srcdir_)interop--*--*.sql))

PG_CPPFLAGS = -DINTEROP_VERSION='"$(EXTVERSION)"'
# warnings for everyone; -Werror only where we check (scripts/check passes
# COPT=-Werror), so a newer compiler's new warning does not break make install
PG_CFLAGS = -Wall -Wextra -Wshadow=compatible-local -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
SHLIB_LINK = -levent_openssl -levent -lcurl -lssl -lcrypto -ljansson

REGRESS = member_id jws keys signatures privileges publish peers exchange consent seal evidence async subscribe definer
REGRESS_OPTS = --load-extension=interop

EXTRA_CLEAN = tmp_check results regression.diffs regression.out

FUZZ_SECONDS ?= 60

ifneq ($(filter check check-all demo deps valgrind sanitize fuzz,$(MAKECMDGOALS)),)
# These goals must work before the build dependencies (pg_config) exist.
.PHONY: check check-all demo deps valgrind sanitize fuzz
check:
	@scripts/check $(if $(PG_MAJOR),--pg $(PG_MAJOR))
check-all:
	@scripts/check --all
demo:
	@scripts/demo
deps:
	@scripts/install-deps
valgrind:
	@test/valgrind
sanitize:
	@scripts/check --sanitize
fuzz:
	@scripts/install-deps --fuzz && test/fuzz/run $(FUZZ_SECONDS)
else
PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
# no JIT bitcode: it would need clang on every machine that builds us
override with_llvm = no
include $(PGXS)

# a build in another directory (VPATH, as pg_buildext does) needs src/ there
ifdef VPATH
$(shell mkdir -p src)
endif

interop--$(EXTVERSION).sql: $(SQL_PARTS) interop.control Makefile
	( echo "-- interop $(EXTVERSION): generated from $(SQL_PARTS) by make; do not edit"; \
	  printf '%s\n' '\echo Use "CREATE EXTENSION interop" to load this file. \quit'; \
	  for f in $(filter %.sql,$^); do echo; cat $$f; done ) > $@
endif
