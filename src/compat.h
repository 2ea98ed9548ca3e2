/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  The differences between the PostgreSQL majors interop builds on (15,
 *	  17, 18), and nowhere else: code elsewhere uses the names below.
 *
 *-------------------------------------------------------------------------
 */
#ifndef INTEROP_COMPAT_H
#define INTEROP_COMPAT_H

/* 16 moved the varlena macros out of postgres.h */
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif

/*
 * 18 replaced pg_attribute_noreturn(), written after a declaration, by
 * pg_noreturn, written before it.  The compilers interop builds with (gcc
 * and clang) accept the attribute after it.
 */
#ifndef pg_attribute_noreturn
#define pg_attribute_noreturn() __attribute__((noreturn))
#endif

/* 17 numbers processes by ProcNumber; before, by PGPROC's pgprocno */
#if PG_VERSION_NUM >= 170000
#define MyProcSlot() (MyProcNumber)
#else
#define MyProcSlot() (MyProc->pgprocno)
#endif

/* 18's base64 functions take bytes as uint8, before as char */
#if PG_VERSION_NUM >= 180000
typedef uint8 pg_b64_byte;
#else
typedef char pg_b64_byte;
#endif

/*
 * 18 can return a deferrable primary key, when asked; interop wants the
 * immediate one, which is all that 15 and 17 return
 */
#if PG_VERSION_NUM >= 180000
#define PrimaryKeyIndex(rel) RelationGetPrimaryKeyIndex((rel), false)
#else
#define PrimaryKeyIndex(rel) RelationGetPrimaryKeyIndex(rel)
#endif

/* 17 replaced the IsBackgroundWorker flag by the process's backend type */
#if PG_VERSION_NUM >= 170000
#include "miscadmin.h"
#define InBackgroundWorker() AmBackgroundWorkerProcess()
#else
#define InBackgroundWorker() (IsBackgroundWorker)
#endif

#endif							/* INTEROP_COMPAT_H */
