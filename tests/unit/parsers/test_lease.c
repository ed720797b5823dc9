/* test_lease: lease_parse (nbdkit-plugin/lease.c) on lease objects as lease_format writes
 * them, and on the damaged or foreign ones it must refuse. */
#include "check.h"
#include "lease.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static int parse(const char *text, struct lease_info *out)
{
    return lease_parse(text, strlen(text), out);
}

static void test_valid(void)
{
    struct lease_info li;

    CHECK(parse("[lease]\ngeneration=7\nholder=h1 pid 42\ninstance=abc\nowner=def\n"
                "ttl_ms=30000\nstate=held\n",
                &li) == 0);
    CHECK(li.found && li.generation == 7 && !li.released);
    CHECK(strcmp(li.holder, "h1 pid 42") == 0 && strcmp(li.instance, "abc") == 0 &&
          strcmp(li.owner, "def") == 0);
    CHECK(li.ttl == 30.0);
    /* Released, CRLF line ends, a comment and a key a newer writer added. */
    CHECK(parse("[lease]\r\n# note\r\ngeneration=1\r\nholder=x\r\ninstance=i\r\nowner=o\r\n"
                "ttl_ms=1500\r\nstate=released\r\nzone=eu\r\n",
                &li) == 0);
    CHECK(li.released && li.ttl == 1.5 && strcmp(li.holder, "x") == 0);
}

static void test_refused(void)
{
    static const char *const bad[] = {
        "",
        "generation=1\n", /* no header */
        "[other]\ngeneration=1\nholder=x\ninstance=i\nowner=o\nttl_ms=1\nstate=held\n",
        "[lease]\nholder=x\ninstance=i\nowner=o\nttl_ms=1\nstate=held\n", /* no generation */
        "[lease]\ngeneration=0\nholder=x\ninstance=i\nowner=o\nttl_ms=1\nstate=held\n",
        "[lease]\ngeneration=-1\nholder=x\ninstance=i\nowner=o\nttl_ms=1\nstate=held\n",
        "[lease]\ngeneration=1x\nholder=x\ninstance=i\nowner=o\nttl_ms=1\nstate=held\n",
        "[lease]\ngeneration=99999999999999999999\nholder=x\ninstance=i\nowner=o\nttl_ms=1\n"
        "state=held\n",
        "[lease]\ngeneration=1\nholder=x\ninstance=i\nowner=o\nttl_ms=0\nstate=held\n",
        "[lease]\ngeneration=1\nholder=x\ninstance=i\nowner=o\nttl_ms=1.5\nstate=held\n",
        "[lease]\ngeneration=1\nholder=x\ninstance=i\nowner=o\nttl_ms=1\nstate=maybe\n",
        "[lease]\ngeneration=1\ngeneration=2\nholder=x\ninstance=i\nowner=o\nttl_ms=1\n"
        "state=held\n", /* a repeated key */
        "[lease]\ngeneration=1\nholder x\ninstance=i\nowner=o\nttl_ms=1\nstate=held\n",
    };
    struct lease_info li;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int r = parse(bad[i], &li);
        if (r != -EBADMSG || li.found)
            fprintf(stderr, "accepted (%d): %s\n", r, bad[i]);
        CHECK(r == -EBADMSG && !li.found);
    }
    /* A NUL inside, and an object longer than any lease. */
    static const char nul[] = "[lease]\ngeneration=1\0\nholder=x\n";
    CHECK(lease_parse(nul, sizeof nul - 1, &li) == -EBADMSG);
    static char big[LEASE_OBJECT_MAX + 2];
    memset(big, 'a', sizeof big - 1);
    CHECK(lease_parse(big, sizeof big - 1, &li) == -EBADMSG);
}

int main(void)
{
    test_valid();
    test_refused();
    return check_exit_code();
}
