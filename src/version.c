/* SPDX-License-Identifier: MIT */
/* version.c: the library's release, for programs linked with a shared library that may be
 * newer than the headers they were compiled with (include/inginious/version.h). */
#include "inginious/version.h"

/* ing_version returns ING_VERSION as the library was built. */
const char *
ing_version(void)
{
    return ING_VERSION;
}

/* ing_version_number returns ING_VERSION_NUMBER as the library was built. */
int
ing_version_number(void)
{
    return ING_VERSION_NUMBER;
}
