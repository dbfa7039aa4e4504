/* Immortal shared values (defined in core/value.c) for hot paths that would otherwise allocate
   an empty value per call: a None result, a call without arguments or keywords. */
#ifndef FERRY_CORE_VALUE_SHARED_H
#define FERRY_CORE_VALUE_SHARED_H

#include "ferry/value.h"

/* A new reference to the one shared None / empty list / empty dict; release it as any value.
   Never fails. The dict cannot be changed (ferry_dict_set refuses a shared dict). */
ferry_value *ferry__value_shared_none(void);
ferry_value *ferry__value_shared_empty_list(void);
ferry_value *ferry__value_shared_empty_dict(void);

#endif
