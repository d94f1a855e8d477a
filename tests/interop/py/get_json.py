# A task shaped like the product document's `get_json` ("Managing Task Output and Status"),
# run by the engine as a Procfile process. There is no internet here, so the records come from
# a local file (the option `data=<path>`, default posts.json beside this script) instead of
# jsonplaceholder; the state keeps the document's fields.
#
# The document's slips, fixed: it calls `s3_client.put_object` after naming the client `s3`;
# it passes the state dict as metadata (boto3 needs a string, so it is sent as JSON); and its
# Metadata dict is not closed. The function is also called (the document only defines it).
import json
import os
import time
from datetime import timedelta

from utils import setup_s3_client

HERE = os.path.dirname(os.path.abspath(__file__))


def get_json():
    ld_env = json.loads(os.environ['line_D'])
    task_id = ld_env['task_id']
    path = os.environ.get('data', os.path.join(HERE, 'posts.json'))
    started = time.monotonic()
    with open(path, 'rb') as f:
        records = json.load(f)
    # You have the option to store state to help with monitoring and composing workflows
    state = {
        'resp_status_code': 200,
        'num_records': len(records),
        'resp_time': str(timedelta(seconds=time.monotonic() - started)),
    }
    s3 = setup_s3_client()
    s3.put_object(
        Body=json.dumps(records).encode('utf-8'),
        Bucket=os.environ.get('LD_S3_BUCKET'),
        Key=f'out/{task_id}',
        Metadata={
            'ld_task_id': task_id,
            'ld_state': json.dumps(state),
        },
    )


if __name__ == '__main__':
    get_json()
