# interop: PGXS build.  The version comes from interop.control alone.
#
#   make            build interop.so and the install script
#   make install    install into the PostgreSQL that pg_config names
#   make check      install missing packages, build, install, run every suite
#   make demo       the end-to-end demonstration (scripts/demo)
#   make valgrind   pg_regress with the server under valgrind (after make install)
#   make sanitize   every suite of make check with interop.so built with UBSan
#   make fuzz       libFuzzer on the parsers, FUZZ_SECONDS each (test/fuzz/run)

EXTENSION = interop
EXTVERSION := $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" $(dir $(lastword $(MAKEFILE_LIST)))interop.control)

MODULE_big = interop
OBJS = src/interop.o src/member_id.o src/jws.o src/keys.o src/x509.o src/publish.o src/protocol.o src/msglog.o src/gateway.o src/client.o src/consent.o src/seal.o src/sync.o src/async.o src/stats.o src/changes.o

# the install script is assembled from the parts beside the C, in this order
SQL_PARTS = src/schema.sql src/member_id.sql src/jws.sql src/x509.sql src/keys.sql src/publish.sql src/client.sql src/msglog.sql src/consent.sql src/seal.sql src/async.sql src/stats.sql src/subscribe.sql
DATA_built = interop--$(EXTVERSION).sql

PG_CPPFLAGS = -DINTEROP_VERSION='"$(EXTVERSION)"' -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
SHLIB_LINK = -levent_openssl -levent -lcurl -lssl -lcrypto -ljansson

REGRESS = member_id jws keys signatures privileges publish peers exchange consent seal async subscribe
REGRESS_OPTS = --load-extension=interop

EXTRA_CLEAN = tmp_check results regression.diffs regression.out

FUZZ_SECONDS ?= 60

ifneq ($(filter check demo deps valgrind sanitize fuzz,$(MAKECMDGOALS)),)
# These goals must work before the build dependencies (pg_config) exist.
.PHONY: check demo deps valgrind sanitize fuzz
check:
	@scripts/check
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

interop--$(EXTVERSION).sql: $(SQL_PARTS) interop.control Makefile
	( echo "-- interop $(EXTVERSION): generated from $(SQL_PARTS) by make; do not edit"; \
	  printf '%s\n' '\echo Use "CREATE EXTENSION interop" to load this file. \quit'; \
	  for f in $(SQL_PARTS); do echo; cat $$f; done ) > $@
endif
