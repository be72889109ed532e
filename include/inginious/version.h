/* SPDX-License-Identifier: MIT */
/* version.h: the release of libinginious and its programs.
 *
 * The macros give the release of the headers a program was compiled with; ing_version() and
 * ing_version_number() that of the library it runs with (the shared library may be newer).
 * Releases follow Semantic Versioning: within a major version the library only adds (new
 * functions, new fields at the end of structs that carry a size, new event types), and the
 * shared library's SONAME is libinginious.so.MAJOR.
 *
 * Thread safety: everything here is constant; call it from any thread. */
#ifndef INGINIOUS_VERSION_H
#define INGINIOUS_VERSION_H

#ifdef __cplusplus
extern "C" {
#endif

#define ING_VERSION_MAJOR 1
#define ING_VERSION_MINOR 0
#define ING_VERSION_PATCH 0
/* ING_VERSION_NUMBER: MAJOR * 10000 + MINOR * 100 + PATCH (1.0.0 -> 10000), for #if. */
#define ING_VERSION_NUMBER \
    (ING_VERSION_MAJOR * 10000 + ING_VERSION_MINOR * 100 + ING_VERSION_PATCH)
/* ING_VERSION: the same as text, "MAJOR.MINOR.PATCH" (a string literal). */
#define ING_VERSION_STR_(x) #x
#define ING_VERSION_STR(x) ING_VERSION_STR_(x)
#define ING_VERSION \
    ING_VERSION_STR(ING_VERSION_MAJOR) "." ING_VERSION_STR(ING_VERSION_MINOR) "." \
        ING_VERSION_STR(ING_VERSION_PATCH)

/* ing_version returns the library's release as text, e.g. "1.0.0" (static storage). */
const char *ing_version(void);
/* ing_version_number returns the library's ING_VERSION_NUMBER. */
int ing_version_number(void);

#ifdef __cplusplus
}
#endif
#endif
