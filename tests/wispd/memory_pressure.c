/* memory_pressure.c: the idle policy's memory-pressure measures (pool/memory_pressure.h) on
 * files written here, in /proc's formats: MemAvailable under and over the limit, PSI's some
 * avg10 under and over, a limit of 0 switching its measure off, a missing PSI file (a kernel
 * without PSI), and the host's own files read without error. */
#include "memory_pressure.h"
#include "fixture.h"

#include <glib.h>
#include <stdio.h>
#include <string.h>

static const char meminfo[] = "MemTotal:       24000000 kB\n"
                              "MemFree:         1000000 kB\n"
                              "MemAvailable:     800000 kB\n"
                              "Buffers:            1000 kB\n";
static const char psi[] = "some avg10=12.50 avg60=3.00 avg300=1.00 total=123456\n"
                          "full avg10=2.00 avg60=0.50 avg300=0.10 total=23456\n";

int main(void)
{
    char mi[600], ps[600], none[600], why[128];

    fx_setup("memory-pressure");
    snprintf(mi, sizeof mi, "%s/meminfo", fx_tmpdir());
    snprintf(ps, sizeof ps, "%s/psi", fx_tmpdir());
    snprintf(none, sizeof none, "%s/no-psi", fx_tmpdir());
    FX_CHECK(g_file_set_contents(mi, meminfo, -1, NULL) && g_file_set_contents(ps, psi, -1, NULL),
             "write the files");

    /* MemAvailable is 781 MiB. */
    struct memory_pressure_limits l = {.low_mib = 1024};
    FX_CHECK(memory_pressure_check(&l, mi, none, why, sizeof why), "781 MiB < 1024 MiB missed");
    FX_CHECK(strstr(why, "MemAvailable 781 MiB"), "why: %s", why);
    l.low_mib = 512;
    FX_CHECK(!memory_pressure_check(&l, mi, none, why, sizeof why), "781 MiB >= 512 MiB: %s", why);
    l.low_mib = 0;
    FX_CHECK(!memory_pressure_check(&l, mi, none, NULL, 0), "low_mib 0 is not off");

    /* some avg10 is 12.5 %. */
    l = (struct memory_pressure_limits){.psi_percent = 10};
    FX_CHECK(memory_pressure_check(&l, mi, ps, why, sizeof why), "avg10 12.5 >= 10 missed");
    FX_CHECK(strstr(why, "avg10=12.50"), "why: %s", why);
    l.psi_percent = 20;
    FX_CHECK(!memory_pressure_check(&l, mi, ps, why, sizeof why), "avg10 12.5 < 20: %s", why);
    l.psi_percent = 10;
    FX_CHECK(!memory_pressure_check(&l, mi, none, NULL, 0), "a missing PSI file is pressure");

    /* The host's own files: whatever they say, they parse (no crash, a reason when true). */
    l = (struct memory_pressure_limits){.low_mib = 1, .psi_percent = 100};
    why[0] = 0;
    bool host = memory_pressure_check(&l, NULL, NULL, why, sizeof why);
    fx_log("host: %s %s", host ? "pressure:" : "no pressure", why);
    FX_CHECK(!host || why[0], "pressure without a reason");
    return 0;
}
