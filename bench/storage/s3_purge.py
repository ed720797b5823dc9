#!/usr/bin/python3
"""s3_purge.py ENDPOINT BUCKET PREFIX: deletes every object under PREFIX (1000 a request) and
prints how many.  Credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.  Used by
scripts/bench storage between measurements, so that the test OSD does not fill up."""
import sys

import boto3


def main():
    endpoint, bucket, prefix = sys.argv[1:4]
    if not prefix:
        sys.exit("refusing an empty prefix")
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    paginator = s3.get_paginator("list_objects_v2")
    n = 0
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            r = s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            if r.get("Errors"):
                sys.exit(f"delete failed: {r['Errors'][:3]}")
            n += len(keys)
    print(n)


if __name__ == "__main__":
    main()
