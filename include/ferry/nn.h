/* Building blocks of torch.nn for the examples: parameter initialization as torch's modules do
   it (nn.Linear, nn.Embedding, nn.LSTMCell) and the LSTM cell's forward, built from ops so that
   autograd differentiates it. Parameters come back as leaves that require grad. The random
   streams are ferry's own (reproducible for a seed, not torch's numbers); the distributions are
   torch's. Thread-safe as the ops are; a generator is used by one thread at a time. */
#ifndef FERRY_NN_H
#define FERRY_NN_H

#include <stdbool.h>
#include <stdint.h>

#include "ferry/error.h"
#include "ferry/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* nn.Linear(in_features, out_features, bias)'s parameters: weight [out, in] from torch's
   kaiming_uniform_(a=sqrt(5)), which is U(-1/sqrt(in), 1/sqrt(in)), and bias [out] from the same
   bound. *weight (and *bias_out when `bias`) receive new references that require grad;
   *bias_out is set to NULL when !bias (bias_out may then be NULL). gen NULL uses the default
   generator. FERRY_EINVAL for sizes < 1, a non-floating dtype or NULL outputs, FERRY_ENOTSUP for
   float16/bfloat16, FERRY_ENOMEM. On failure the outputs are left NULL. */
FERRY_API ferry_status ferry_linear_init(int64_t in_features, int64_t out_features, bool bias,
                                         ferry_dtype dtype, ferry_generator *gen,
                                         ferry_tensor **weight, ferry_tensor **bias_out);

/* nn.Embedding(num_embeddings, embedding_dim)'s weight: [num, dim] from N(0, 1), requiring
   grad (new reference), or NULL with FERRY_EINVAL (sizes < 1, a non-floating dtype),
   FERRY_ENOTSUP (float16/bfloat16) or FERRY_ENOMEM. gen NULL uses the default generator. */
FERRY_API ferry_tensor *ferry_embedding_init(int64_t num_embeddings, int64_t embedding_dim,
                                             ferry_dtype dtype, ferry_generator *gen);

/* nn.LSTMCell(input_size, hidden_size, bias)'s parameters, every one from
   U(-1/sqrt(hidden), 1/sqrt(hidden)) as torch's reset_parameters: w_ih [4*hidden, input],
   w_hh [4*hidden, hidden], b_ih and b_hh [4*hidden] (set to NULL when !bias; they may then be
   NULL themselves). New references that require grad; errors as ferry_linear_init. */
FERRY_API ferry_status ferry_lstm_cell_init(int64_t input_size, int64_t hidden_size, bool bias,
                                            ferry_dtype dtype, ferry_generator *gen,
                                            ferry_tensor **w_ih, ferry_tensor **w_hh,
                                            ferry_tensor **b_ih, ferry_tensor **b_hh);

/* One step of nn.LSTMCell: gates = input @ w_ih^T + b_ih + h @ w_hh^T + b_hh, split into the
   input, forget, cell and output gates in torch's order (i, f, g, o);
   c_out = sigmoid(f) * c + sigmoid(i) * tanh(g), h_out = sigmoid(o) * tanh(c_out).
   input is [batch, input_size] or unbatched [input_size]; h and c have the matching
   [batch, hidden] / [hidden] shape, or are NULL for zeros (torch's hx=None); b_ih and b_hh may be
   NULL (bias=False). All borrowed. *h_out and *c_out receive new references in the autograd graph
   when any input requires grad. FERRY_EINVAL for NULL arguments or inconsistent shapes (torch's
   messages: "input has inconsistent input_size: got 5 expected 3"), plus whatever the ops
   report; on failure the outputs are left NULL. */
FERRY_API ferry_status ferry_lstm_cell(ferry_tensor *input, ferry_tensor *h, ferry_tensor *c,
                                       ferry_tensor *w_ih, ferry_tensor *w_hh, ferry_tensor *b_ih,
                                       ferry_tensor *b_hh, ferry_tensor **h_out,
                                       ferry_tensor **c_out);

#ifdef __cplusplus
}
#endif
#endif
