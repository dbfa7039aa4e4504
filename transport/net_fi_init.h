/* libfabric's one-time initialisation, done the way start-up wants it (net_fi_init.c): the
   first fi_getinfo of a process initialises every provider libfabric was built with, and two
   of them cost far more CPU than ferry's own start (docs/performance.md, "Start-up"). */
#ifndef FERRY_TRANSPORT_NET_FI_INIT_H
#define FERRY_TRANSPORT_NET_FI_INIT_H

/* Runs libfabric's initialisation once per process, before the first fi_getinfo of net.c:
   - the rxm provider's shared receive pool is sized to one buffer chunk
     (FI_OFI_RXM_MSG_RX_SIZE, only when the environment does not set it);
   - where libfabric's verbs provider reads /proc/kallsyms to learn about dma-buf and peer
     memory support, the read is skipped (ferry never uses verbs), unless verbs is asked for in
     FI_PROVIDER or FERRY_FABRIC_FULL_INIT=1.
   Anything that does not apply here is left alone, and libfabric then initialises itself as
   usual on the first fi_getinfo. Safe to call from any thread, any number of times. */
void ferry__net_fi_init(void);

#endif
