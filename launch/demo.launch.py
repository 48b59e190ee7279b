"""Live demo on a machine with a camera and a microphone: both drivers plus the classifier.

    ros2 launch av_snn_ros demo.launch.py
    ros2 launch av_snn_ros demo.launch.py image_topic:=/demo/image audio_topic:=/demo/audio
    ros2 topic echo /classification

The drivers publish on ``image_topic`` and ``audio_topic`` (relative names resolve in ``namespace``),
where the classifier (robot.launch.py with config/demo.yaml) listens. Device, rate and size settings
live in the params file. The demo needs both sensors: when either driver exits (no device, unplugged),
the whole launch ends instead of leaving an idle classifier. Without a ROS installation use
``av-snn run --demo``; without any device, ``av-snn demo`` replays the bundled bag.
"""
from pathlib import Path

PACKAGE = 'av_snn_ros'
SHARE_DIR = Path(__file__).resolve().parent.parent
ROBOT_LAUNCH = SHARE_DIR / 'launch' / 'robot.launch.py'
DEFAULT_PARAMS_FILE = SHARE_DIR / 'config' / 'demo.yaml'


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from av_snn_ros.ros.launch_support import shutdown_when_exited

    params_file = LaunchConfiguration('params_file')
    namespace = LaunchConfiguration('namespace')
    image_topic = LaunchConfiguration('image_topic')
    audio_topic = LaunchConfiguration('audio_topic')
    microphone = Node(package=PACKAGE, executable='microphone_node', name='microphone', namespace=namespace,
                      parameters=[params_file], remappings=[('audio', audio_topic)], output='screen')
    camera = Node(package=PACKAGE, executable='camera_node', name='camera', namespace=namespace,
                  parameters=[params_file], output='screen',
                  remappings=[('image', image_topic), ('image/compressed', [image_topic, '/compressed'])])
    return LaunchDescription([
        DeclareLaunchArgument('params_file', default_value=str(DEFAULT_PARAMS_FILE),
                              description='ROS parameter file of the drivers and the classifier'),
        DeclareLaunchArgument('namespace', default_value='', description='namespace of all three nodes'),
        DeclareLaunchArgument('image_topic', default_value='image',
                              description='topic the camera publishes and the classifier reads'),
        DeclareLaunchArgument('audio_topic', default_value='audio',
                              description='topic the microphone publishes and the classifier reads'),
        DeclareLaunchArgument('autostart', default_value='true', choices=['true', 'false'],
                              description='configure and activate the classifier from launch'),
        microphone,
        camera,
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(ROBOT_LAUNCH)),
            launch_arguments={'params_file': params_file, 'namespace': namespace, 'image_topic': image_topic,
                              'audio_topic': audio_topic,
                              'autostart': LaunchConfiguration('autostart')}.items()),
        shutdown_when_exited(microphone, 'the microphone driver exited: the demo needs both sensors'),
        shutdown_when_exited(camera, 'the camera driver exited: the demo needs both sensors'),
    ])
