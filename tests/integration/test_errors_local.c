/* The remote status in one process: how the thread's last error keeps it (set, passed up,
   saved and restored, cleared) and how an error response carries it on the wire, old peers'
   responses without it included. */
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/future_impl.h"
#include "rpc/wire.h"
#include "test_util.h"

Test(errors_local, last_remote_status_follows_the_last_error, .timeout = 10)
{
    ferry_clear_error();
    cr_assert_eq(ferry_last_remote_status(), FERRY_OK);
    ferry_set_error(FERRY_EINVAL, "bad");
    cr_assert_eq(ferry_last_remote_status(), FERRY_EINVAL);
    ferry__set_remote_error(FERRY_ETYPE, "function 'f' on worker 'w' failed: %s", "kind");
    cr_assert_eq(ferry_last_status(), FERRY_EREMOTE);
    cr_assert_eq(ferry_last_remote_status(), FERRY_ETYPE);
    /* Passed up with more words: the code behind stays. */
    ferry_set_error(ferry_last_status(), "outer: %s", ferry_last_error());
    cr_assert_eq(ferry_last_remote_status(), FERRY_ETYPE);
    cr_assert_str_eq(ferry_last_error(), "outer: function 'f' on worker 'w' failed: kind");
    /* Saved and restored around someone else's work. */
    ferry__error_state saved;
    ferry__error_save(&saved);
    ferry_set_error(FERRY_ENOMEM, "other");
    cr_assert_eq(ferry_last_remote_status(), FERRY_ENOMEM);
    ferry__error_restore(&saved);
    cr_assert_eq(ferry_last_remote_status(), FERRY_ETYPE);
    /* Any other failure replaces it; a fresh FERRY_EREMOTE has no known cause. */
    ferry_set_error(FERRY_ETIMEDOUT, NULL);
    ferry_set_error(FERRY_EREMOTE, "by hand");
    cr_assert_eq(ferry_last_remote_status(), FERRY_EREMOTE);
    /* Codes that are not known read as FERRY_EREMOTE. */
    ferry__set_remote_error(FERRY_OK, "none sent");
    cr_assert_eq(ferry_last_remote_status(), FERRY_EREMOTE);
    ferry__set_remote_error((ferry_status)999, "beyond ours");
    cr_assert_eq(ferry_last_remote_status(), FERRY_EREMOTE);
    ferry_clear_error();
    cr_assert_eq(ferry_last_remote_status(), FERRY_OK);
}

static ferry__msg round_trip(const ferry__msg *m)
{
    uint8_t *buf;
    size_t len;
    ferry_assert_ok(ferry__wire_encode_flat(m, NULL, &buf, &len));
    ferry__msg out;
    ferry_assert_ok(ferry__wire_decode_flat(buf, len, NULL, &out));
    ferry__free(buf);
    return out;
}

Test(errors_local, error_responses_carry_the_remote_status, .timeout = 10)
{
    ferry__msg m = {.type = FERRY__MSG_RESPONSE, .id = 3, .is_error = true,
                    .err_code = FERRY_EREMOTE, .err_remote = FERRY_EINVAL,
                    .err_message = "function 'f' on worker 'w' failed: bad", .err_worker = "w"};
    ferry__msg out = round_trip(&m);
    cr_assert(out.is_error);
    cr_assert_eq(out.err_code, FERRY_EREMOTE);
    cr_assert_eq(out.err_remote, FERRY_EINVAL);
    cr_assert_str_eq(out.err_message, "function 'f' on worker 'w' failed: bad");
    ferry__msg_clear(&out);
    /* An old peer sends no code: not known, and the future it fails reads FERRY_EREMOTE. */
    m.err_remote = FERRY_OK;
    out = round_trip(&m);
    cr_assert_eq(out.err_code, FERRY_EREMOTE);
    cr_assert_eq(out.err_remote, FERRY_OK);
    ferry_future *f = ferry_future_new();
    ferry_assert_ok(ferry__future_set_error_remote(f, out.err_code, out.err_remote, "old"));
    cr_assert_eq(ferry_future_remote_status(f), FERRY_EREMOTE);
    ferry_future_release(f);
    ferry__msg_clear(&out);
    /* Errors other than FERRY_EREMOTE have no cause to carry. */
    m.err_code = FERRY_ETIMEDOUT;
    out = round_trip(&m);
    cr_assert_eq(out.err_code, FERRY_ETIMEDOUT);
    cr_assert_eq(out.err_remote, FERRY_OK);
    ferry__msg_clear(&out);
}

Test(errors_local, encode_refuses_a_remote_status_it_cannot_carry, .timeout = 10)
{
    ferry__wire_out out;
    ferry__msg m = {.type = FERRY__MSG_RESPONSE, .is_error = true, .err_code = FERRY_EREMOTE,
                    .err_remote = FERRY__STATUS_COUNT};
    ferry_assert_status(ferry__wire_encode(&m, NULL, &out), FERRY_EINVAL);
    char want[96];
    snprintf(want, sizeof want, "remote error code %d is out of range or not behind "
             "FERRY_EREMOTE", (int)FERRY__STATUS_COUNT);
    cr_assert_str_eq(ferry_last_error(), want);
    m.err_code = FERRY_EINVAL;
    m.err_remote = FERRY_ETYPE;
    ferry_assert_status(ferry__wire_encode(&m, NULL, &out), FERRY_EINVAL);
    cr_assert_str_eq(ferry_last_error(),
                     "remote error code 10 is out of range or not behind FERRY_EREMOTE");
}
