/* SPDX-License-Identifier: MIT */
/* version.h: the release of libinginious and its programs. */
#ifndef INGINIOUS_VERSION_H
#define INGINIOUS_VERSION_H

#define ING_VERSION "1.0.0"

#endif
