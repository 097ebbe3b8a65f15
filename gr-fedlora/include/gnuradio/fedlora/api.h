/* -*- c++ -*- */
/*
 * gr-fedlora: GNU Radio blocks of the fedlora AirComp testbed.
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#ifndef INCLUDED_FEDLORA_API_H
#define INCLUDED_FEDLORA_API_H

#include <gnuradio/attributes.h>

#ifdef gnuradio_fedlora_EXPORTS
#define FEDLORA_API __GR_ATTR_EXPORT
#else
#define FEDLORA_API __GR_ATTR_IMPORT
#endif

#endif /* INCLUDED_FEDLORA_API_H */
