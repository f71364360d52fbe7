/* wire.h: protobuf envelopes and tensor blobs on the wire (proto/plumb.proto).
 *
 * Outgoing messages are built on a WireArena: every submessage, tensor and
 * string a builder makes lives in the arena until wire_arena_free, so a
 * message tree is freed in one call. Tensor builders may point at the
 * caller's arrays (no copy); they must stay valid until the message is
 * packed.
 *
 * Incoming messages are unpacked with wire_unpack, which checks the frame
 * size, the protobuf encoding and the protocol version. Every tensor is then
 * read through a checked getter that verifies dtype, shape, byte count and
 * value ranges (token ids against the vocabulary, offsets, sequence lengths
 * against the context) before any element is used, and copies the data into
 * aligned arrays the caller owns. */
#ifndef PLUMB_WIRE_H
#define PLUMB_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "proto/plumb.pb-c.h"

#define PLUMB_PROTOCOL 3
#define WIRE_MAX_MESSAGE_DEFAULT (256u << 20)  /* bytes */

struct Base;

/* ---------------------------------------------------------------- arena */

typedef struct WireArena WireArena;

WireArena *wire_arena_new(void);
void wire_arena_free(WireArena **a);
/* Zeroed memory owned by the arena; NULL when out of memory. */
void *wire_alloc(WireArena *a, size_t bytes);
/* A copy of s in the arena. */
char *wire_strdup(WireArena *a, const char *s);

/* -------------------------------------------------------------- builders */

/* Tensors pointing at data (not copied). shape has ndim entries. */
Plumb__Tensor *wire_tensor(WireArena *a, Plumb__DType dt, const void *data, int ndim,
                           const int64_t *shape);
Plumb__Tensor *wire_f32(WireArena *a, const float *x, int n);       /* (n) f32 */
Plumb__Tensor *wire_i32(WireArena *a, const int *x, int n);         /* (n) i32 */
Plumb__Tensor *wire_u8(WireArena *a, const unsigned char *x, int n);/* (n) u8  */

/* B packed sequences: tokens (offsets[B]), offsets (B+1), mask (offsets[B])
 * or NULL. Points at the arrays. */
Plumb__Seqs *wire_seqs(WireArena *a, const int *tokens, const int *offsets,
                       const unsigned char *mask, int B);

/* A new envelope for a request or reply (protocol set, body not set). */
Plumb__Envelope *wire_envelope(WireArena *a, uint64_t id, const char *role);
/* An Error reply to request id. */
Plumb__Envelope *wire_error(WireArena *a, uint64_t id, int code, const char *message);

/* Packs e into a malloc'ed buffer (*buf, *len); the caller frees it. */
int wire_pack(const Plumb__Envelope *e, void **buf, size_t *len);

/* ------------------------------------------------------------- receiving */

/* Unpacks a frame of len bytes. Fails (message naming `from`) when the
 * frame is over max_bytes, is not a valid Envelope (garbage), has no body,
 * or carries another protocol version. Free with wire_free. */
int wire_unpack(const void *buf, size_t len, size_t max_bytes, const char *from,
                Plumb__Envelope **out);
void wire_free(Plumb__Envelope **e);

/* What a decoder checks a batch against (from the model config). */
typedef struct {
    int vocab;              /* token ids must lie in [0, vocab)                */
    int max_seq;            /* a sequence holds at most this many tokens       */
    long max_tokens;        /* all sequences together (0: no limit)            */
} WireLimits;

/* Decoded packed sequences; arrays malloc'ed and owned. */
typedef struct {
    int B, N;
    int *tokens;            /* (N)                                             */
    int *offsets;           /* (B+1)                                           */
    unsigned char *mask;    /* (N) 0/1, all 0 when the message had none        */
    float *maskf;           /* (N) the mask as floats, for algo/               */
} WireSeqs;

/* Checks and copies m: tokens i32 (N), offsets i32 (B+1) starting at 0,
 * non-decreasing, ending at N, every sequence non-empty and at most
 * lim->max_seq long, ids in [0, vocab), mask u8 (N) of 0/1 when present.
 * `what` names the field in messages ("generate.prompts"). NULL m fails. */
int wire_get_seqs(const Plumb__Seqs *m, const WireLimits *lim, const char *what, WireSeqs *out);
void wire_seqs_free(WireSeqs *s);

/* Checks that t is f32 of shape (n) (finite values when finite != 0) and
 * copies it into a malloc'ed *out. */
int wire_get_f32(const Plumb__Tensor *t, long n, int finite, const char *what, float **out);

/* ---------------------------------------------------------------- names */

/* The name of a train body as plumb.proto spells it ("sft", "dpo"); "?"
 * for none. */
const char *wire_train_body_name(Plumb__TrainReq__BodyCase c);

/* e's body as plumb.proto spells it ("generate", "train_rep"; a train
 * request with its body: "train.sft") into buf (cap bytes); returns buf.
 * An envelope without a body is "an empty message". */
const char *wire_body_name(const Plumb__Envelope *e, char *buf, size_t cap);

/* ------------------------------------------------------------ identity */

/* A 32-hex-digit fingerprint of a base model: its config, tensor names and
 * shapes, and a sample of every tensor's values (the first and last 4 KiB
 * and 64 strided floats), so that workers that loaded different
 * checkpoints are told apart without hashing gigabytes. */
int wire_fingerprint(const struct Base *b, char out[33]);

#endif
