/* Every allocation in ferry goes through these, so tests can make the Nth one fail. */
#ifndef FERRY_CORE_ALLOC_H
#define FERRY_CORE_ALLOC_H

#include <stdbool.h>
#include <stddef.h>

void *ferry__malloc(size_t n);
void *ferry__calloc(size_t count, size_t n);
void *ferry__realloc(void *p, size_t n);
void ferry__free(void *p);
char *ferry__strdup(const char *s);
char *ferry__strndup(const char *s, size_t n);
/* 64-byte aligned memory for tensor storage, freed with ferry__free_aligned. */
void *ferry__malloc_aligned(size_t n);
void ferry__free_aligned(void *p);

/* Test hook: the `nth` allocation from now on (1 = the next) fails, and every one after it
   while `sticky`. 0 turns failures off. Process-wide; tests run one per process. */
void ferry__alloc_fail_after(long nth, int sticky);

/* For allocators built on these (object caches): true when the allocation being made now is one
   the hook above says fails. Counts it as one allocation. */
bool ferry__alloc_fail_now(void);

#endif
