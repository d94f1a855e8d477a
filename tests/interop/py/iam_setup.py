# IAM for the rotation tests, on moto: the engine's user (its own access key, allowed S3, SQS
# and to assume the app's role) and the app's role (trusting that user, allowed the bucket,
# with a 12-hour maximum session), and a reader with less than the engine needs. Prints one
# JSON object: the users' keys and the role's ARN.
# Usage: iam_setup.py BUCKET (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... set by the caller).
import json
import sys

import boto3

bucket = sys.argv[1]
iam = boto3.client('iam', region_name='us-east-1')
user = iam.create_user(UserName='ld-engine')['User']
iam.put_user_policy(
    UserName='ld-engine',
    PolicyName='ld-engine',
    PolicyDocument=json.dumps({
        'Version': '2012-10-17',
        'Statement': [
            {'Effect': 'Allow', 'Action': ['s3:*', 'sqs:*'], 'Resource': '*'},
            {'Effect': 'Allow', 'Action': 'sts:AssumeRole', 'Resource': '*'},
        ],
    }),
)
key = iam.create_access_key(UserName='ld-engine')['AccessKey']
role = iam.create_role(
    RoleName='ld-app',
    MaxSessionDuration=43200,
    AssumeRolePolicyDocument=json.dumps({
        'Version': '2012-10-17',
        'Statement': [{
            'Effect': 'Allow',
            'Principal': {'AWS': user['Arn']},
            'Action': 'sts:AssumeRole',
        }],
    }),
)['Role']
iam.put_role_policy(
    RoleName='ld-app',
    PolicyName='ld-app',
    PolicyDocument=json.dumps({
        'Version': '2012-10-17',
        'Statement': [{
            'Effect': 'Allow',
            'Action': 's3:*',
            'Resource': [f'arn:aws:s3:::{bucket}', f'arn:aws:s3:::{bucket}/*'],
        }],
    }),
)
# A user with less than the engine needs: it may read, not write or send.
iam.create_user(UserName='ld-reader')
iam.put_user_policy(
    UserName='ld-reader',
    PolicyName='ld-reader',
    PolicyDocument=json.dumps({
        'Version': '2012-10-17',
        'Statement': [{
            'Effect': 'Allow',
            # moto names HEAD bucket s3:HeadBucket (AWS checks s3:ListBucket).
            'Action': ['s3:ListBucket', 's3:HeadBucket', 's3:GetObject', 's3:GetBucket*',
                       's3:GetLifecycleConfiguration',
                       'sqs:GetQueueAttributes', 'sqs:ReceiveMessage'],
            'Resource': '*',
        }],
    }),
)
reader = iam.create_access_key(UserName='ld-reader')['AccessKey']
print(json.dumps({
    'access_key_id': key['AccessKeyId'],
    'secret_access_key': key['SecretAccessKey'],
    'role_arn': role['Arn'],
    'reader_key_id': reader['AccessKeyId'],
    'reader_secret': reader['SecretAccessKey'],
}))
