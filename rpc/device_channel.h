/* Side channels: ways to move the bytes of device tensors outside the message that names them
   (NCCL between two workers with GPUs; the emulation's stand-in, which sends them in a message of
   their own). The message carries each such tensor's descriptor with the channel, a sequence
   number and the byte count, and no attachment; the bytes follow on the channel.

   The contract between the codec's users in rpc/ and a channel:
   - The sender takes a sequence number per tensor from the channel (next_seq) when it encodes
     the message, and after the message went to the fabric makes one send per number; a number
     whose message could not be sent is handed back with cancel. Numbers are per (sender,
     receiver) pair and channel; sends and cancels may come in any order and from any thread:
     whatever order the channel itself needs (NCCL matches sends and receives in order) it keeps
     itself.
   - The receiver calls recv for the tensors of a message once it is decoded, before the values
     are used (before the user function runs, before a response completes its future); recv
     returns once the bytes are in device memory and any device work to put them there is done.
     recv may wait for bytes (or, for NCCL, a communicator's id) that come through the fabric:
     it must not be called on a thread that reads the fabric while it waits (the progress
     thread, an inline handler).
     A channel must accept recvs in any order of sequence numbers (messages from a peer can be
     decoded on different threads) and match each with the send of the same number.
   - Failure is a status with a message naming the peer, the device and the cause, never an
     abort; a failed recv fails only its message, and the channel stays usable for others where
     the cause allows (a timeout), or says it is not usable any more for that peer.
   All hooks are thread-safe. */
#ifndef FERRY_RPC_DEVICE_CHANNEL_H
#define FERRY_RPC_DEVICE_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ferry/error.h"
#include "ferry/tensor.h"
#include "rpc/module.h"

typedef struct ferry__device_channel {
    const char *name; /* "nccl", "emulated-p2p" */
    /* Its id on the wire (TensorDesc.channel), 1..7; 0 means "in the message". */
    uint32_t id;
    /* True when tensors going from device `local` here to device `remote` on `peer` may take
       this channel (both sides have what it needs). Cheap; called per tensor. */
    bool (*usable)(ferry__agent *agent, int peer, ferry_device local, ferry_device remote);
    /* The next sequence number toward `peer`. */
    uint64_t (*next_seq)(ferry__agent *agent, int peer);
    /* The message carrying `seq` was not sent: the receiver will never ask for it. */
    void (*cancel)(ferry__agent *agent, int peer, uint64_t seq);
    /* Sender: moves t's bytes (`nbytes` from `data`, device memory of t's device) to `peer`
       under `seq`. The channel retains `t` until it no longer reads the memory. Work already
       queued on the device's stream (ferry__device_stream) before the call is ordered before
       the bytes are read. */
    ferry_status (*send)(ferry__agent *agent, int peer, uint64_t seq, ferry_tensor *t,
                         const void *data, size_t nbytes);
    /* Receiver: fills `data` (nbytes of device memory on cuda:`device`) with what `peer` sent
       under `seq`; returns when they are there, or with FERRY_ETIMEDOUT after timeout_s
       (0 = no limit). */
    ferry_status (*recv)(ferry__agent *agent, int peer, uint64_t seq, void *data, size_t nbytes,
                         int device, double timeout_s);
    /* What the channel needs on both workers, for the error when FERRY_DEVICE_PATH asks for it
       and it is not usable ("NCCL and real GPUs"). */
    const char *needs;
} ferry__device_channel;

/* Registers a channel for every agent (constructors only). Channels are tried in registration
   order; the first usable one carries a tensor. */
void ferry__device_channel_register(const ferry__device_channel *channel);
/* The channel for a tensor going from `local` here to `remote` on `peer` (NULL: in the message,
   staged or direct), and the channel with wire id `id` (NULL if none). FERRY_DEVICE_PATH in the
   environment (read once per process, at the first pick) decides: unset or "auto", the first
   usable channel; "staged" or "direct", none; "nccl" or "p2p" (the emulated peer-to-peer
   channel), that channel, and when it is not usable for the tensor the pick fails instead of
   quietly taking another path. A CPU device on either side never takes a channel.
   choose: FERRY_OK with *out set (NULL: in the message); FERRY_ENOTSUP when the path asked for
   cannot carry the tensor, naming the path, both devices, the peer and what the channel needs;
   FERRY_EINVAL for a FERRY_DEVICE_PATH that names no path. pick is the same with the status on
   the thread: NULL with status FERRY_OK means "in the message". Thread-safe. */
ferry_status ferry__device_channel_choose(ferry__agent *agent, int peer, ferry_device local,
                                          ferry_device remote,
                                          const ferry__device_channel **out);
const ferry__device_channel *ferry__device_channel_pick(ferry__agent *agent, int peer,
                                                        ferry_device local, ferry_device remote);
const ferry__device_channel *ferry__device_channel_by_id(uint32_t id);

/* What a peer has, published by the agent when workers meet at init: its device count (0 when
   it has none) and its backend ("cuda", "emulated" or "none", as ferry_device_backend). peer
   may be this worker. Defined in device_map.c. */
int ferry__agent_peer_device_count(ferry__agent *agent, int peer);
const char *ferry__agent_peer_device_backend(ferry__agent *agent, int peer);

#endif
