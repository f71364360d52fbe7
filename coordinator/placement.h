/* placement.h: the worker processes plumb train starts on this host, the
 * roles of each and the device it computes on, from launch.workers,
 * launch.devices and launch.device.
 *
 *   launch.devices  the GPUs of this host the run uses: "0-7", "0,2,4-5"
 *                   (empty: none listed; launch.device then says where);
 *   launch.workers  "auto"       one process per role the algorithm needs,
 *                                on launch.device; with launch.devices,
 *                                as "colocated";
 *                   "colocated"  one process per listed GPU, each hosting
 *                                every role the algorithm needs;
 *                   else processes separated by spaces, the roles of one
 *                   by commas, each entry optionally ending in @GPUS: one
 *                   process per GPU listed there ("actor@0-5
 *                   critic,reward@6-7": six actor replicas and two
 *                   processes of critic and reward). With launch.devices
 *                   every entry says where, within the listed GPUs.
 *
 * Where GPUs are listed, launch.device must be cuda. Processes run on
 * cuda:N for the GPU N they were given, else on launch.device. */
#ifndef PLUMB_PLACEMENT_H
#define PLUMB_PLACEMENT_H

#include "coordinator/config.h"

#define PLACE_MAX_PROCS 64
#define PLACE_MAX_GPUS 1024

typedef struct {
    char roles[128];         /* "actor,reference"                           */
    char device[24];         /* "cuda:3", or launch.device                  */
} PlaceProc;

typedef struct {
    int n;
    PlaceProc proc[PLACE_MAX_PROCS];
} Placement;

/* The GPU numbers of spec ("0-3,6") into ids (up to max), their count into
 * *n; what names the key in errors. PL_EINVAL for a malformed list, a
 * number over PLACE_MAX_GPUS - 1, a reversed range or a repeated GPU. */
int place_gpus(const char *spec, int *ids, int max, int *n, const char *what);

/* The processes of c (roles checked against what c's algorithm needs:
 * every needed role placed, no unknown role). PL_EINVAL, naming the key
 * and the entry, otherwise. */
int place_plan(const RunConfig *c, Placement *out);

#endif
